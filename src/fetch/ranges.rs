//! Parallel ranged download of one large file: `connections_per_file` requests for chunks of
//! `chunk_size` (32 MiB by default) land in place in the preallocated partial file; a hasher thread hashes the chunks in
//! order as soon as the next one is complete (reading it back from the page cache), so the
//! sha256 is ready when the last chunk lands.
//!
//! A sidecar, `{partial}.chunks`, records the chunks that are on disk; it is replaced after
//! each chunk's bytes are written back (`sync_file_range`), so a crash loses at most the chunks
//! in flight. The sidecar names the expected sha256 and size: a partial of other content is
//! never resumed. A server that ignores `Range` makes the caller fall back to one stream.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::future::try_join_all;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{FetchError, Http, Progress};
use crate::digest::Sha256Hex;
use crate::publish::fsx;
use crate::secret::redact;
use crate::verify::{Expected, Written};

const SLICE: usize = 64 << 10;

/// The chunks of a partial file that are on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sidecar {
    sha256: String,
    size: u64,
    chunk: u64,
    done: BTreeSet<u64>,
}

/// The sidecar of a partial file.
pub fn sidecar_path(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".chunks");
    PathBuf::from(name)
}

/// How a parallel download ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The partial file holds the whole file, written back; the digest is checked by the caller.
    Done(Written),
    /// The server does not honour `Range`: the partial file and sidecar are gone; stream instead.
    NoRanges,
}

/// Messages to the writer thread: bytes at an offset, then "chunk i is complete".
enum Write {
    At(u64, Bytes),
    Complete(u64),
}

/// Downloads `url` into `partial` over several connections. `transferred` counts bytes
/// received.
pub async fn download(
    http: &Http,
    url: &str,
    partial: &Path,
    expected: &Expected,
    progress: Progress<'_>,
    transferred: &AtomicU64,
) -> Result<Ended, FetchError> {
    let local = |doing: &str, e: &io::Error| FetchError::local(&format!("{doing} {}", partial.display()), e);
    let sidecar_file = sidecar_path(partial);
    let chunk = http.chunk_size;
    let chunks = expected.size.div_ceil(chunk);
    let sidecar =
        resume_or_start(partial, &sidecar_file, expected, chunk).map_err(|e| local("cannot prepare", &e))?;
    let pending: Vec<u64> = (0..chunks).filter(|i| !sidecar.done.contains(i)).collect();
    if !sidecar.done.is_empty() {
        tracing::info!(chunks_done = sidecar.done.len(), chunks, url = %redact(url), "resuming a parallel download");
    }
    let done_bytes = sidecar.done.iter().map(|&i| chunk_len(i, chunk, expected.size)).sum::<u64>();
    let received = AtomicU64::new(done_bytes);
    progress(done_bytes);

    let file = fsx::open_partial(partial, false).map_err(|e| local("cannot open", &e))?;
    let reader = fsx::open_nofollow(partial).map_err(|e| local("cannot read", &e))?;
    let (to_writer, writes) = mpsc::channel::<Write>(16);
    let (to_hasher, completed) = std::sync::mpsc::channel::<u64>();
    for &i in &sidecar.done {
        let _ = to_hasher.send(i);
    }
    let size = expected.size;
    let writer = {
        let sidecar_file = sidecar_file.clone();
        std::thread::Builder::new()
            .name("range-writer".into())
            .spawn(move || write_loop(&file, writes, sidecar, &sidecar_file, &to_hasher))
            .map_err(|e| local("cannot start a writer thread for", &e))?
    };
    let hasher = std::thread::Builder::new()
        .name("range-hasher".into())
        .spawn(move || hash_loop(&reader, size, chunk, &completed))
        .map_err(|e| local("cannot start a hasher thread for", &e))?;

    let next = Mutex::new(pending.into_iter());
    let workers = (0..http.connections_per_file.max(1))
        .map(|_| worker(http, url, expected, &next, &to_writer, &received, transferred, progress));
    let outcome = try_join_all(workers).await;
    drop(to_writer);
    let writer_result = tokio::task::spawn_blocking(move || writer.join()).await;
    let written = match (outcome, writer_result) {
        (Err(e), _) => Err(e),
        (Ok(_), Ok(Ok(Ok(())))) => Ok(()),
        (Ok(_), Ok(Ok(Err(e)))) => Err(local("writing", &e)),
        (Ok(_), _) => Err(local("writing", &io::Error::other("the writer thread failed"))),
    };
    let digest = tokio::task::spawn_blocking(move || hasher.join()).await;
    match written {
        Err(e) if e.message == NO_RANGES => {
            remove(partial);
            Ok(Ended::NoRanges)
        }
        Err(e) => Err(e),
        Ok(()) => match digest {
            Ok(Ok(Ok(hasher))) => {
                let _ = std::fs::remove_file(&sidecar_file);
                Ok(Ended::Done(Written { sha256: Sha256Hex::from_hasher(hasher), size }))
            }
            Ok(Ok(Err(e))) => Err(local("hashing", &e)),
            _ => Err(local("hashing", &io::Error::other("the hasher thread failed"))),
        },
    }
}

const NO_RANGES: &str = "the server does not honour Range";

/// One connection: takes the next pending chunk until none is left.
#[allow(clippy::too_many_arguments)]
async fn worker(
    http: &Http,
    url: &str,
    expected: &Expected,
    next: &Mutex<std::vec::IntoIter<u64>>,
    to_writer: &mpsc::Sender<Write>,
    received: &AtomicU64,
    transferred: &AtomicU64,
    progress: Progress<'_>,
) -> Result<(), FetchError> {
    loop {
        let Some(i) = next.lock().expect("chunk queue").next() else { return Ok(()) };
        let start = i * http.chunk_size;
        let end = start + chunk_len(i, http.chunk_size, expected.size) - 1;
        let _permit = http.host_permit(url).await;
        let mut response = http.get_range(url, start, end).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(FetchError::transient(NO_RANGES));
        }
        if !super::http::content_range_is(
            response.headers().get(reqwest::header::CONTENT_RANGE),
            start,
            end,
            expected.size,
        ) {
            return Err(FetchError::integrity(format!(
                "{}: wrong Content-Range for bytes {start}-{end} of {}",
                redact(url),
                expected.size
            )));
        }
        let mut offset = start;
        while let Some(piece) = http.next_chunk(&mut response, url).await? {
            if offset + piece.len() as u64 > end + 1 {
                return Err(FetchError::integrity(format!(
                    "{}: more than the {} bytes asked for (bytes {start}-{end})",
                    redact(url),
                    end + 1 - start
                )));
            }
            let n = piece.len() as u64;
            if to_writer.send(Write::At(offset, piece)).await.is_err() {
                return Err(FetchError::local(
                    "writing the partial file",
                    &io::Error::other("the writer stopped"),
                ));
            }
            offset += n;
            transferred.fetch_add(n, Ordering::Relaxed);
            progress(received.fetch_add(n, Ordering::Relaxed) + n);
        }
        if offset != end + 1 {
            return Err(FetchError::transient(format!(
                "{}: the connection ended after {} of {} bytes of chunk {i}",
                redact(url),
                offset - start,
                end + 1 - start
            )));
        }
        if to_writer.send(Write::Complete(i)).await.is_err() {
            return Err(FetchError::local(
                "writing the partial file",
                &io::Error::other("the writer stopped"),
            ));
        }
    }
}

fn chunk_len(i: u64, chunk: u64, size: u64) -> u64 {
    chunk.min(size - i * chunk)
}

/// The sidecar to continue with: the existing one when it belongs to this file and the partial
/// file is whole-size; otherwise a fresh, empty one (sidecar first, then the preallocated file).
fn resume_or_start(
    partial: &Path,
    sidecar_file: &Path,
    expected: &Expected,
    chunk: u64,
) -> io::Result<Sidecar> {
    let existing: Option<Sidecar> =
        std::fs::read(sidecar_file).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let partial_len = fsx::regular_len(partial);
    if let Some(sidecar) = existing
        && sidecar.sha256 == expected.sha256.as_str()
        && sidecar.size == expected.size
        && sidecar.chunk == chunk
        && partial_len == expected.size
    {
        return Ok(sidecar);
    }
    let fresh =
        Sidecar { sha256: expected.sha256.to_string(), size: expected.size, chunk, done: BTreeSet::new() };
    fsx::write_atomic(sidecar_file, &serde_json::to_vec(&fresh).expect("sidecar serializes"))?;
    let file = fsx::open_partial(partial, true)?;
    allocate(&file, expected.size)?;
    Ok(fresh)
}

/// Gives the file its full size with the blocks reserved (a full disk fails here, not later).
fn allocate(file: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(io::Error::other)?;
    // SAFETY: plain syscall on a valid, open descriptor.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => file.set_len(size),
        _ => Err(error),
    }
}

/// Writes pieces at their offsets; when a chunk is complete, writes it back, records it in the
/// sidecar and tells the hasher. Ends with an fsync of the file.
fn write_loop(
    file: &File,
    mut writes: mpsc::Receiver<Write>,
    mut sidecar: Sidecar,
    sidecar_file: &Path,
    to_hasher: &std::sync::mpsc::Sender<u64>,
) -> io::Result<()> {
    while let Some(message) = writes.blocking_recv() {
        match message {
            Write::At(offset, bytes) => file.write_all_at(&bytes, offset)?,
            Write::Complete(i) => {
                let (start, len) = (i * sidecar.chunk, chunk_len(i, sidecar.chunk, sidecar.size));
                write_back(file, start, len);
                sidecar.done.insert(i);
                fsx::write_atomic(sidecar_file, &serde_json::to_vec(&sidecar).expect("sidecar serializes"))?;
                let _ = to_hasher.send(i);
            }
        }
    }
    file.sync_all()
}

/// Writes a range back to disk and waits for it (the sidecar may then name it).
fn write_back(file: &File, start: u64, len: u64) {
    let (Ok(start), Ok(len)) = (libc::off64_t::try_from(start), libc::off64_t::try_from(len)) else { return };
    let flags =
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain syscall on a valid, open descriptor.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), start, len, flags);
    }
}

/// Hashes chunks in order as they complete, reading them back from the file.
fn hash_loop(
    reader: &File,
    size: u64,
    chunk: u64,
    completed: &std::sync::mpsc::Receiver<u64>,
) -> io::Result<Sha256> {
    let chunks = size.div_ceil(chunk);
    let mut hasher = Sha256::new();
    let mut ready = BTreeSet::new();
    let mut next = 0;
    let mut buf = vec![0u8; SLICE];
    while next < chunks {
        let Ok(i) = completed.recv() else {
            return Err(io::Error::other("the download stopped before every chunk was complete"));
        };
        ready.insert(i);
        while ready.remove(&next) {
            let (mut at, end) = (next * chunk, next * chunk + chunk_len(next, chunk, size));
            while at < end {
                let want = usize::try_from((end - at).min(SLICE as u64)).unwrap_or(SLICE);
                reader.read_exact_at(&mut buf[..want], at)?;
                hasher.update(&buf[..want]);
                at += want as u64;
            }
            next += 1;
        }
    }
    Ok(hasher)
}

/// Removes a partial file and its sidecar.
pub fn remove(partial: &Path) {
    for path in [partial.to_owned(), sidecar_path(partial)] {
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "cannot remove: {e}");
        }
    }
}
