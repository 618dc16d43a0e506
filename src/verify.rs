//! Verification while streaming: every byte received is written to the partial file on one
//! thread and hashed on another, so the SHA-256 is known the moment the last byte lands, with
//! no second read pass. Bytes already in a partial file (a resumed download) are re-hashed from
//! disk first, so the digest always covers the whole file.
//!
//! The writer starts write-back of every 32 MiB as it goes (`sync_file_range`), so the final
//! fsync has little left to do and dirty pages do not pile up.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::digest::Sha256Hex;
use crate::fetch::FetchError;
use crate::publish::fsx;

/// What the index says the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Bytes are handed to the threads in pieces of this size (one copy, cache-friendly).
const PIECE: usize = 256 << 10;
/// Pieces in flight per thread: bounds memory at `2 * QUEUE * PIECE` per download.
const QUEUE: usize = 16;
/// The hasher works in slices that stay in L2.
const HASH_SLICE: usize = 64 << 10;
/// Write-back is started for every window of this size.
const WRITEBACK_WINDOW: u64 = 32 << 20;

/// What a finished transfer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// A partial file being filled from `offset` on.
pub struct Pipeline {
    pending: BytesMut,
    to_writer: mpsc::Sender<Bytes>,
    to_hasher: mpsc::Sender<Bytes>,
    writer: JoinHandle<io::Result<u64>>,
    hasher: JoinHandle<io::Result<Sha256>>,
    position: u64,
}

impl Pipeline {
    /// Opens (or creates) the partial file at `path`, keeps its first `resume_from` bytes, and
    /// reserves room for `expected_size` bytes so a full disk shows now, not half-way.
    pub fn start(path: &Path, resume_from: u64, expected_size: u64) -> Result<Self, FetchError> {
        let local = |doing: &str, e: &io::Error| FetchError::local(&format!("{doing} {}", path.display()), e);
        let mut file = fsx::open_partial(path, false).map_err(|e| local("cannot open", &e))?;
        file.set_len(resume_from).map_err(|e| local("cannot truncate", &e))?;
        reserve(&file, expected_size).map_err(|e| local("cannot reserve space for", &e))?;
        file.seek(SeekFrom::Start(resume_from)).map_err(|e| local("cannot seek", &e))?;
        let reader = fsx::open_nofollow(path).map_err(|e| local("cannot read", &e))?;

        let (to_writer, from_network) = mpsc::channel::<Bytes>(QUEUE);
        let (to_hasher, for_hashing) = mpsc::channel::<Bytes>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || write_loop(file, resume_from, from_network))
            .map_err(|e| local("cannot start a writer thread for", &e))?;
        let hasher = std::thread::Builder::new()
            .name("hasher".into())
            .spawn(move || hash_loop(reader, resume_from, for_hashing))
            .map_err(|e| local("cannot start a hasher thread for", &e))?;
        Ok(Self {
            pending: BytesMut::with_capacity(PIECE),
            to_writer,
            to_hasher,
            writer,
            hasher,
            position: resume_from,
        })
    }

    /// Bytes in the file once everything pushed so far is written.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Queues `chunk` for writing and hashing; waits when the threads are behind.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.position += chunk.len() as u64;
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = PIECE - self.pending.len();
            let take = room.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == PIECE {
                self.send().await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), FetchError> {
        let piece = std::mem::replace(&mut self.pending, BytesMut::with_capacity(PIECE)).freeze();
        let sent_w = self.to_writer.send(piece.clone()).await;
        let sent_h = self.to_hasher.send(piece).await;
        if sent_w.is_err() || sent_h.is_err() {
            // A thread stopped on an I/O error; `finish` reports it.
            return Err(FetchError::local(
                "writing the partial file",
                &io::Error::other("the writer stopped"),
            ));
        }
        Ok(())
    }

    /// Writes what is left, makes the file durable (fsync) and returns its digest and size.
    pub async fn finish(mut self) -> Result<Written, FetchError> {
        if !self.pending.is_empty() {
            let _ = self.send().await;
        }
        let Self { to_writer, to_hasher, writer, hasher, .. } = self;
        drop((to_writer, to_hasher));
        tokio::task::spawn_blocking(move || {
            let size = join(writer).map_err(|e| FetchError::local("writing the partial file", &e))?;
            let hasher = join(hasher).map_err(|e| FetchError::local("hashing the partial file", &e))?;
            Ok(Written { sha256: Sha256Hex::from_hasher(hasher), size })
        })
        .await
        .map_err(|e| FetchError::local("joining the writer", &io::Error::other(e.to_string())))?
    }

    /// Stops, keeping everything received so far (for a later resume). Returns the bytes kept.
    pub async fn stop(mut self) -> u64 {
        if !self.pending.is_empty() {
            let _ = self.send().await;
        }
        let Self { to_writer, to_hasher, writer, hasher, .. } = self;
        drop((to_writer, to_hasher));
        tokio::task::spawn_blocking(move || {
            let _ = join(hasher);
            join(writer).unwrap_or(0)
        })
        .await
        .unwrap_or(0)
    }
}

fn join<T>(handle: JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle.join().unwrap_or_else(|_| Err(io::Error::other("thread panicked")))
}

/// Writes pieces in order, starting write-back window by window; returns the final length
/// after an fsync.
fn write_loop(mut file: File, mut position: u64, mut pieces: mpsc::Receiver<Bytes>) -> io::Result<u64> {
    let mut window_start = position;
    while let Some(piece) = pieces.blocking_recv() {
        file.write_all(&piece)?;
        position += piece.len() as u64;
        if position - window_start >= WRITEBACK_WINDOW {
            start_writeback(&file, window_start, position - window_start);
            window_start = position;
        }
    }
    file.sync_all()?;
    Ok(position)
}

/// Hashes the first `prefix` bytes from disk, then every piece.
fn hash_loop(mut reader: File, prefix: u64, mut pieces: mpsc::Receiver<Bytes>) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_SLICE];
    let mut left = prefix;
    while left > 0 {
        let want = usize::try_from(left.min(HASH_SLICE as u64)).unwrap_or(HASH_SLICE);
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the partial file is shorter than recorded",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    while let Some(piece) = pieces.blocking_recv() {
        for slice in piece.chunks(HASH_SLICE) {
            hasher.update(slice);
        }
    }
    Ok(hasher)
}

/// Reserves `size` bytes for the file without changing its length (so the length still says
/// how much was downloaded). Filesystems without fallocate are fine.
fn reserve(file: &File, size: u64) -> io::Result<()> {
    let Ok(len) = libc::off_t::try_from(size) else { return Ok(()) };
    // SAFETY: plain syscall on a valid, open descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(()),
        _ => Err(error),
    }
}

/// Asks the kernel to start writing a range to disk now (no waiting).
fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on a valid, open descriptor; failure only loses the head start.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Compares what was written with what the index says: size first, then sha256.
pub fn check(written: &Written, expected: &Expected) -> Result<(), FetchError> {
    if written.size != expected.size {
        return Err(FetchError::integrity(format!(
            "size mismatch: expected {} bytes, got {}",
            expected.size, written.size
        )));
    }
    if written.sha256 != expected.sha256 {
        return Err(FetchError::integrity(format!(
            "checksum mismatch: expected sha256 {}, got {}",
            expected.sha256, written.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hash_reader;

    fn expected_of(data: &[u8]) -> Expected {
        let (sha256, size) = hash_reader(data).unwrap();
        Expected { sha256, size }
    }

    #[tokio::test]
    async fn pipeline_writes_and_hashes_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut pipeline = Pipeline::start(&path, 0, data.len() as u64).unwrap();
        for chunk in data.chunks(12_345) {
            pipeline.push(chunk).await.unwrap();
        }
        let written = pipeline.finish().await.unwrap();
        check(&written, &expected_of(&data)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn resumed_pipeline_hashes_the_prefix_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 13) as u8).collect();
        // A partial with 400 000 good bytes and some stale bytes after them.
        let mut partial = data[..400_000].to_vec();
        partial.extend_from_slice(b"stale tail");
        std::fs::write(&path, &partial).unwrap();
        let mut pipeline = Pipeline::start(&path, 400_000, data.len() as u64).unwrap();
        pipeline.push(&data[400_000..]).await.unwrap();
        let written = pipeline.finish().await.unwrap();
        check(&written, &expected_of(&data)).unwrap();
    }

    #[tokio::test]
    async fn stopping_keeps_every_byte_received() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut pipeline = Pipeline::start(&path, 0, 1 << 20).unwrap();
        pipeline.push(&[7u8; 1000]).await.unwrap();
        assert_eq!(pipeline.stop().await, 1000);
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 1000]);
    }

    #[test]
    fn mismatches_name_both_values() {
        let expected = expected_of(b"abc");
        let wrong = Written { sha256: expected_of(b"abd").sha256, size: 3 };
        let err = check(&wrong, &expected).unwrap_err();
        assert!(
            err.message.contains(expected.sha256.as_str()) && err.message.contains(wrong.sha256.as_str())
        );
        let short = Written { sha256: expected.sha256.clone(), size: 2 };
        assert!(check(&short, &expected).unwrap_err().message.contains("expected 3 bytes, got 2"));
    }
}
