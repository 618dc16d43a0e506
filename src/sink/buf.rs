//! Page-aligned buffers and the pool that bounds them.
//!
//! A buffer holds bytes of one file range. Its data starts at `offset % ALIGN` inside the
//! aligned memory, so a byte at an aligned file offset sits at an aligned address: the aligned
//! middle of any buffer can go to disk with `O_DIRECT`, straight from the memory it was received
//! into. Buffers are reused (no page faults, no allocator traffic per piece), and a download
//! holds at most the pool's count of them, whatever the file's size.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

/// The alignment `O_DIRECT` needs on every file system models-fetch expects (the page size).
pub const ALIGN: usize = 4096;
/// Bytes of one buffer.
pub const BUF: usize = 1 << 20;

/// Bytes of the file range `offset..offset + len`.
pub struct Buf {
    mem: Vec<u8>,
    base: usize,
    head: usize,
    len: usize,
    offset: u64,
}

impl Buf {
    fn new() -> Self {
        let mem = vec![0u8; BUF + ALIGN];
        let base = mem.as_ptr().align_offset(ALIGN);
        Self { mem, base, head: 0, len: 0, offset: 0 }
    }

    /// Empties the buffer for bytes starting at file offset `offset`.
    fn reset(&mut self, offset: u64) {
        self.offset = offset;
        self.head = usize::try_from(offset % ALIGN as u64).expect("below ALIGN");
        self.len = 0;
    }

    /// Copies as much of `bytes` as fits; returns how much.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = self.room().min(bytes.len());
        let at = self.base + self.head + self.len;
        self.mem[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Room left; a full buffer ends at an aligned file offset.
    pub fn room(&self) -> usize {
        BUF - self.head - self.len
    }

    pub fn data(&self) -> &[u8] {
        &self.mem[self.base + self.head..self.base + self.head + self.len]
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Buffers no download holds, kept for the next one while any download runs (many small
/// files then reuse the same few buffers: no page faults, no allocator arenas growing), and
/// freed when the last one ends, so an idle daemon holds none.
static SPARE: Mutex<Vec<Buf>> = Mutex::new(Vec::new());
const SPARE_MAX: usize = 32;
static LIVE_POOLS: AtomicUsize = AtomicUsize::new(0);

/// At most `count` buffers in use; taking one waits (asynchronously) for one to come back.
pub struct Pool {
    permits: Semaphore,
    waited_ns: AtomicU64,
}

impl Pool {
    pub fn new(count: usize) -> Self {
        LIVE_POOLS.fetch_add(1, Ordering::Relaxed);
        Self { permits: Semaphore::new(count), waited_ns: AtomicU64::new(0) }
    }

    /// A buffer for bytes from `offset` on, or `None` once the pool is closed (the download
    /// is ending on an error).
    pub async fn take(&self, offset: u64) -> Option<Buf> {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = Instant::now();
                let permit = self.permits.acquire().await.ok()?;
                let ns = u64::try_from(waiting.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.waited_ns.fetch_add(ns, Ordering::Relaxed);
                permit
            }
        };
        permit.forget();
        let mut buf = spare().pop().unwrap_or_else(Buf::new);
        buf.reset(offset);
        Some(buf)
    }

    /// `more` buffers may be in use from now on.
    pub fn grow(&self, more: usize) {
        self.permits.add_permits(more);
    }

    /// Returns a buffer (from any thread).
    pub fn give(&self, buf: Buf) {
        let mut spare = spare();
        if spare.len() < SPARE_MAX {
            spare.push(buf);
        }
        drop(spare);
        self.permits.add_permits(1);
    }

    /// Wakes every waiter with `None`: nothing will come back.
    pub fn close(&self) {
        self.permits.close();
    }

    /// Nanoseconds receivers have spent waiting for a buffer: time the network was not the
    /// bottleneck.
    pub fn waited_ns(&self) -> u64 {
        self.waited_ns.load(Ordering::Relaxed)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if LIVE_POOLS.fetch_sub(1, Ordering::Relaxed) == 1 {
            spare().clear();
        }
    }
}

fn spare() -> std::sync::MutexGuard<'static, Vec<Buf>> {
    SPARE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_keeps_the_file_alignment() {
        let pool = Pool::new(1);
        let mut buf = pool.take(4096 * 3 + 100).await.unwrap();
        assert_eq!(buf.fill(&[1; 10]), 10);
        assert_eq!(buf.data().as_ptr() as usize % ALIGN, 100);
        assert_eq!(buf.room(), BUF - 110);
        assert_eq!(buf.end(), 4096 * 3 + 110);
        let big = vec![2u8; BUF];
        let n = buf.fill(&big);
        assert_eq!(buf.end() % ALIGN as u64, 0, "a full buffer ends aligned");
        assert_eq!(n, BUF - 110);
    }

    #[tokio::test]
    async fn a_closed_pool_gives_nothing() {
        let pool = std::sync::Arc::new(Pool::new(1));
        let held = pool.take(0).await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take(0).await.is_none() }
        });
        tokio::task::yield_now().await;
        pool.close();
        assert!(waiter.await.unwrap());
        pool.give(held);
    }
}
