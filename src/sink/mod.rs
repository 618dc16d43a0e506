//! Where received bytes go: verification while streaming. Receivers (one per connection) copy
//! the bytes they read into page-aligned buffers from a bounded pool; a hasher thread hashes
//! them in file order from memory, and a writer thread writes them in place with `O_DIRECT`.
//! Receiving, hashing and writing overlap, the SHA-256 is known when the last byte lands, and
//! memory stays at the pool's size whatever the file's size.
//!
//! Bytes already on disk when the sink starts (a resumed download), and bytes that arrive ahead
//! of the hash (another connection's range), are hashed from the file, so the digest always
//! covers the whole file exactly as it is on disk.

mod buf;
pub mod disk;
mod threads;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use rangemap::RangeSet;

use crate::digest::Sha256Hex;
use crate::fsx;
use crate::verify::Written;
use buf::{Buf, Pool};
use threads::{HashLoop, Hashed, ToHasher, WriteLoop};

/// Called by the writer with the ranges on disk, every few MiB and at the end (the sidecar of a
/// parallel download).
pub type Recorder = Box<dyn FnMut(&RangeSet<u64>) -> io::Result<()> + Send>;

/// A failure of the sink: what it was doing, and the system's error, kept as itself (so a
/// full disk is known by its `raw_os_error`, not by its text).
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub struct SinkError {
    /// `cannot open`, `cannot write`, ...: followed by the partial file's path in messages.
    pub doing: &'static str,
    #[source]
    pub source: io::Error,
}

impl SinkError {
    fn new(doing: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self { doing, source }
    }
}

/// What a receiver gets when the writer or hasher has stopped: `Sink::end` has the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the writer stopped")]
pub struct Stopped;

/// How a sink ended.
#[derive(Debug)]
pub struct Ended {
    /// Digest and size when every byte of the file is on disk, hashed and fsync'd.
    pub complete: Option<Written>,
    /// The ranges on disk.
    pub on_disk: RangeSet<u64>,
}

impl Ended {
    /// Bytes on disk from the start of the file without a gap.
    pub fn prefix(&self) -> u64 {
        self.on_disk.get(&0).map_or(0, |r| r.end)
    }
}

/// The hasher and writer of one partial file.
pub struct Sink {
    pool: Arc<Pool>,
    to_hasher: EndOnDrop,
    hasher: JoinHandle<io::Result<Hashed>>,
    writer: JoinHandle<io::Result<RangeSet<u64>>>,
    size: u64,
    busy_ns: Arc<AtomicU64>,
}

impl Sink {
    /// Starts on the existing partial file at `path` of a file of `size` bytes, of which the
    /// ranges `on_disk` are already there. `receivers` bounds the memory: a few buffers each
    /// (`add_receivers` makes room for more).
    pub fn start(
        path: &Path,
        size: u64,
        on_disk: RangeSet<u64>,
        receivers: usize,
        recorder: Option<Recorder>,
    ) -> Result<Self, SinkError> {
        let disk = disk::Disk::open(path).map_err(SinkError::new("cannot open"))?;
        let reader = fsx::open_nofollow(path).map_err(SinkError::new("cannot read"))?;
        no_readahead(&reader);
        let pool = Arc::new(Pool::new(6 + 2 * receivers.max(1)));
        let (to_hasher, from_receivers) = mpsc::channel();
        let (to_writer, from_hasher) = mpsc::channel();
        let busy_ns = Arc::new(AtomicU64::new(0));
        let hash_loop = HashLoop {
            reader,
            on_disk: on_disk.clone(),
            from_receivers,
            to_writer,
            pool: pool.clone(),
            busy_ns: busy_ns.clone(),
        };
        let write_loop = WriteLoop {
            disk,
            on_disk,
            size,
            from_hasher,
            to_hasher: to_hasher.clone(),
            pool: pool.clone(),
            recorder,
        };
        let writer = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || write_loop.run())
            .map_err(SinkError::new("cannot start a writer thread for"))?;
        let hasher = std::thread::Builder::new()
            .name("hasher".into())
            .spawn(move || hash_loop.run())
            .map_err(SinkError::new("cannot start a hasher thread for"))?;
        Ok(Self { pool, to_hasher: EndOnDrop(to_hasher), hasher, writer, size, busy_ns })
    }

    /// One stream into the partial file at `path`, keeping its first `keep` bytes.
    pub fn stream(path: &Path, keep: u64, size: u64) -> Result<Self, SinkError> {
        disk::prepare_prefix(path, keep, size).map_err(SinkError::new("cannot prepare"))?;
        let mut on_disk = RangeSet::new();
        if keep > 0 {
            on_disk.insert(0..keep);
        }
        Self::start(path, size, on_disk, 1, None)
    }

    /// A receiver's way in: bytes pushed go to the file from `offset` on.
    pub fn feed(&self, offset: u64) -> Feed {
        Feed { pool: self.pool.clone(), to_hasher: self.to_hasher.0.clone(), buf: None, position: offset }
    }

    /// Room for `more` receivers: the pool grows by a few buffers each.
    pub fn add_receivers(&self, more: usize) {
        self.pool.grow(2 * more);
    }

    /// Nanoseconds receivers have waited for the hasher and writer so far.
    pub fn backpressure_ns(&self) -> u64 {
        self.pool.waited_ns()
    }

    /// Nanoseconds the hasher has been busy so far: while it idles, the bytes come too slowly.
    pub fn hasher_busy_ns(&self) -> u64 {
        self.busy_ns.load(Ordering::Relaxed)
    }

    /// Waits for the threads once every feed is flushed or dropped.
    pub async fn end(self) -> Result<Ended, SinkError> {
        let Self { to_hasher, hasher, writer, size, .. } = self;
        drop(to_hasher); // sends End
        tokio::task::spawn_blocking(move || {
            let writer = join(writer);
            let hasher = join(hasher);
            let on_disk = writer.map_err(SinkError::new("cannot write"))?;
            let hashed = hasher.map_err(SinkError::new("cannot hash"))?;
            let complete = (hashed.hashed == size && on_disk.gaps(&(0..size)).next().is_none())
                .then(|| Written { sha256: Sha256Hex::from_hasher(hashed.hasher), size });
            Ok(Ended { complete, on_disk })
        })
        .await
        .map_err(|e| SinkError {
            doing: "cannot join the writer of",
            source: io::Error::other(e.to_string()),
        })?
    }
}

/// Sends `End` when dropped: by `Sink::end`, and when a sink is dropped without it (its
/// download task aborted, e.g. by a reload). The hasher and writer hold senders to each other,
/// so neither would ever see its channel close: without this they, their open files and
/// their buffers would stay for the life of the process.
struct EndOnDrop(Sender<ToHasher>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(ToHasher::End);
    }
}

fn join<T>(handle: JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle.join().unwrap_or_else(|_| Err(io::Error::other("thread panicked")))
}

/// The reader reads back exactly the ranges the writer reported on disk. Readahead would read
/// past them, into blocks not written yet: the file system zero-fills those pages (half the
/// hasher's CPU in a profile of a 4-connection download), and the writer's `O_DIRECT` writes
/// then have to throw them out of the page cache again.
fn no_readahead(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid, open descriptor; it is only a hint.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
    }
}

/// One receiver's bytes, in order from one offset.
pub struct Feed {
    pool: Arc<Pool>,
    to_hasher: Sender<ToHasher>,
    buf: Option<Buf>,
    position: u64,
}

impl Feed {
    /// The file offset the next byte goes to.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Copies `bytes` into buffers, handing each full one on; waits when the hasher and writer
    /// are behind.
    pub async fn push(&mut self, mut bytes: &[u8]) -> Result<(), Stopped> {
        while !bytes.is_empty() {
            let buf = match &mut self.buf {
                Some(buf) => buf,
                None => {
                    let Some(buf) = self.pool.take(self.position).await else { return Err(Stopped) };
                    self.buf.insert(buf)
                }
            };
            let n = buf.fill(bytes);
            bytes = &bytes[n..];
            self.position += n as u64;
            if buf.room() == 0 {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Hands on the bytes pushed so far.
    pub fn flush(&mut self) -> Result<(), Stopped> {
        match self.buf.take() {
            Some(buf) if buf.is_empty() => {
                self.pool.give(buf);
                Ok(())
            }
            Some(buf) => self.to_hasher.send(ToHasher::Piece(buf)).map_err(|_| Stopped),
            None => Ok(()),
        }
    }
}

impl Drop for Feed {
    /// A feed dropped mid-way (its connection cancelled) gives its buffer back.
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hash_reader;

    fn data(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(seed) % 251) as u8).collect()
    }

    fn sha(data: &[u8]) -> Sha256Hex {
        hash_reader(data).unwrap().0
    }

    /// Flushes every feed, then ends the sink.
    async fn finish(sink: Sink, mut feeds: Vec<Feed>) -> Ended {
        for feed in &mut feeds {
            feed.flush().unwrap();
        }
        drop(feeds);
        sink.end().await.unwrap()
    }

    fn partial(dir: &tempfile::TempDir, content: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join("p");
        std::fs::write(&path, content).unwrap();
        path
    }

    #[tokio::test]
    async fn one_stream_is_written_and_hashed_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = partial(&dir, b"");
        let data = data(3_000_000, 7);
        let sink = Sink::start(&path, data.len() as u64, RangeSet::new(), 1, None).unwrap();
        let mut feed = sink.feed(0);
        for piece in data.chunks(12_345) {
            feed.push(piece).await.unwrap();
        }
        feed.flush().unwrap();
        let ended = sink.end().await.unwrap();
        assert_eq!(ended.complete.unwrap().sha256, sha(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn a_tmpfs_partial_works_with_or_without_o_direct() {
        // tmpfs refuses O_DIRECT before Linux 6.6 and takes it since.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else { return };
        let path = partial(&dir, b"");
        let data = data(2_000_003, 11);
        let sink = Sink::start(&path, data.len() as u64, RangeSet::new(), 1, None).unwrap();
        let mut feed = sink.feed(0);
        feed.push(&data).await.unwrap();
        feed.flush().unwrap();
        let ended = sink.end().await.unwrap();
        assert_eq!(ended.complete.unwrap().sha256, sha(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn a_prefix_on_disk_is_hashed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = data(2_500_000, 13);
        let path = partial(&dir, &data[..400_001]);
        let mut on_disk = RangeSet::new();
        on_disk.insert(0..400_001);
        let sink = Sink::start(&path, data.len() as u64, on_disk, 1, None).unwrap();
        let mut feed = sink.feed(400_001);
        feed.push(&data[400_001..]).await.unwrap();
        feed.flush().unwrap();
        let ended = sink.end().await.unwrap();
        assert_eq!(ended.complete.unwrap().sha256, sha(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn ranges_out_of_order_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = data(9 * (1 << 20) + 12_345, 31);
        let path = partial(&dir, &vec![0u8; data.len()]);
        let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder: Recorder = {
            let recorded = recorded.clone();
            Box::new(move |set: &RangeSet<u64>| {
                recorded.lock().unwrap().push(set.clone());
                Ok(())
            })
        };
        let sink = Sink::start(&path, data.len() as u64, RangeSet::new(), 3, Some(recorder)).unwrap();
        // Three receivers, the last range first.
        let cuts = [0, 3_000_000, 6_500_000, data.len()];
        let mut feeds: Vec<Feed> = (0..3).map(|i| sink.feed(cuts[i] as u64)).collect();
        for step in 0.. {
            let mut any = false;
            for i in (0..3).rev() {
                let from = cuts[i] + step * 65_536;
                if from < cuts[i + 1] {
                    feeds[i].push(&data[from..(from + 65_536).min(cuts[i + 1])]).await.unwrap();
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let ended = finish(sink, feeds).await;
        assert_eq!(ended.complete.unwrap().sha256, sha(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let last = recorded.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.iter().cloned().collect::<Vec<_>>(), vec![0..data.len() as u64]);
    }

    #[tokio::test]
    async fn a_sink_dropped_without_end_stops_its_threads() {
        /// Dropped with the recorder, that is when the writer thread is gone.
        struct Gone(std::sync::mpsc::Sender<()>);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = partial(&dir, &vec![0u8; 3 << 20]);
        let (tx, rx) = std::sync::mpsc::channel();
        let gone = Gone(tx);
        let recorder: Recorder = Box::new(move |_: &RangeSet<u64>| {
            let _ = &gone;
            Ok(())
        });
        let sink = Sink::start(&path, 3 << 20, RangeSet::new(), 2, Some(recorder)).unwrap();
        let mut feed = sink.feed(0);
        feed.push(&vec![1u8; 1_500_000]).await.unwrap();
        // As when the download task is aborted: the future holding both is dropped.
        drop(feed);
        drop(sink);
        let stopped = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert!(stopped.is_ok(), "the writer thread still runs 5 s after its sink was dropped");
    }

    #[tokio::test]
    async fn an_empty_file_is_complete_with_the_empty_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let sink = Sink::stream(&path, 0, 0).unwrap();
        let ended = sink.end().await.unwrap();
        let written = ended.complete.unwrap();
        assert_eq!((written.size, written.sha256), (0, sha(b"")));
    }

    /// Unaligned ranges (a 10 MB chunk), out of order, resumed at odd offsets, pushes of odd
    /// sizes and flushes as on an idle connection.
    #[tokio::test]
    async fn unaligned_ranges_out_of_order_land_and_hash_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let len = 30_000_777;
        let data = data(len, 2_654_435_761);
        let mut content = vec![0u8; len];
        content[..1_234_567].copy_from_slice(&data[..1_234_567]);
        content[10_000_000..10_004_097].copy_from_slice(&data[10_000_000..10_004_097]);
        let path = partial(&dir, &content);
        let on_disk: RangeSet<u64> = [0..1_234_567, 10_000_000..10_004_097].into_iter().collect();
        let sink = Sink::start(&path, len as u64, on_disk, 4, None).unwrap();
        let cuts =
            [(1_234_567, 10_000_000), (10_004_097, 20_000_000), (20_000_000, 30_000_000), (30_000_000, len)];
        let mut feeds: Vec<Feed> = cuts.iter().map(|c| sink.feed(c.0 as u64)).collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.0).collect();
        for step in 0.. {
            let mut any = false;
            for i in (0..4).rev() {
                if at[i] < cuts[i].1 {
                    let to = (at[i] + [4095, 65_536, 1, 333_333, 4097][(step + i) % 5]).min(cuts[i].1);
                    feeds[i].push(&data[at[i]..to]).await.unwrap();
                    at[i] = to;
                    if step % 7 == i {
                        feeds[i].flush().unwrap();
                    }
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let ended = finish(sink, feeds).await;
        assert!(std::fs::read(&path).unwrap() == data, "the file differs from the bytes pushed");
        assert_eq!(ended.complete.unwrap().sha256, sha(&data));
    }

    #[tokio::test]
    async fn stopping_early_reports_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = partial(&dir, b"");
        let sink = Sink::start(&path, 10 << 20, RangeSet::new(), 1, None).unwrap();
        let mut feed = sink.feed(0);
        feed.push(&[7u8; 5000]).await.unwrap();
        feed.flush().unwrap();
        let ended = sink.end().await.unwrap();
        assert!(ended.complete.is_none());
        assert_eq!(ended.prefix(), 5000);
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 5000]);
    }
}
