//! The two threads of a sink. Every buffer goes receiver -> hasher -> writer -> pool:
//!
//! - the hasher hashes a buffer from memory when it is the next in file order, and passes it
//!   on; a buffer that arrived ahead of its turn (another connection's range) goes to the
//!   writer unhashed, and the hasher reads it back from the file once the writer reports it
//!   written and the hash has reached it;
//! - the writer writes each buffer at its offset, gives it back to the pool, keeps the set of
//!   ranges on disk and hands it to the progress recorder every few MiB.
//!
//! The threads stop on `End` (all receivers done): the hasher passes it to the writer, which
//! answers `WriterDone` after its last write, so no "written" report is lost.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use rangemap::RangeSet;
use sha2::{Digest, Sha256};

use super::Recorder;
use super::buf::{BUF, Buf, Pool};
use super::disk::Disk;

/// The progress recorder is called after this many bytes were written since the last call, or
/// after this long (for a slow transfer).
const RECORD_EVERY: u64 = 8 << 20;
const RECORD_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

pub enum ToHasher {
    Piece(Buf),
    Written(std::ops::Range<u64>),
    End,
    WriterDone,
}

pub enum ToWriter {
    Write { buf: Buf, hashed: bool },
    End,
}

/// What the hasher ends with: the state after `hashed` bytes (the file's first bytes).
pub struct Hashed {
    pub hasher: Sha256,
    pub hashed: u64,
}

pub struct HashLoop {
    pub reader: File,
    pub on_disk: RangeSet<u64>,
    pub from_receivers: Receiver<ToHasher>,
    pub to_writer: Sender<ToWriter>,
    pub pool: Arc<Pool>,
    /// Nanoseconds spent hashing (and reading back), for the connection ramp.
    pub busy_ns: Arc<AtomicU64>,
}

impl HashLoop {
    pub fn run(mut self) -> io::Result<Hashed> {
        let result = self.hash();
        if result.is_err() {
            // Receivers waiting for a buffer must not wait forever.
            self.pool.close();
        }
        result
    }

    fn hash(&mut self) -> io::Result<Hashed> {
        let mut state = Hashed { hasher: Sha256::new(), hashed: 0 };
        let mut scratch = Vec::new();
        self.catch_up(&mut state, &mut scratch)?;
        while let Ok(message) = self.from_receivers.recv() {
            let busy = Instant::now();
            match message {
                ToHasher::Piece(buf) => {
                    let hashed = buf.offset() == state.hashed;
                    if hashed {
                        state.hasher.update(buf.data());
                        state.hashed = buf.end();
                    }
                    let _ = self.to_writer.send(ToWriter::Write { buf, hashed });
                }
                ToHasher::Written(range) => self.on_disk.insert(range),
                ToHasher::End => {
                    let _ = self.to_writer.send(ToWriter::End);
                }
                ToHasher::WriterDone => break,
            }
            self.catch_up(&mut state, &mut scratch)?;
            let ns = u64::try_from(busy.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        }
        Ok(state)
    }

    /// Hashes what is on disk from the hash's position on.
    fn catch_up(&mut self, state: &mut Hashed, scratch: &mut Vec<u8>) -> io::Result<()> {
        while let Some(range) = self.on_disk.get(&state.hashed).cloned() {
            scratch.resize(BUF, 0);
            let end = range.end;
            while state.hashed < end {
                let want = usize::try_from((end - state.hashed).min(scratch.len() as u64)).unwrap_or(BUF);
                self.reader.read_exact_at(&mut scratch[..want], state.hashed)?;
                state.hasher.update(&scratch[..want]);
                state.hashed += want as u64;
            }
            self.on_disk.remove(range.start..end);
        }
        Ok(())
    }
}

pub struct WriteLoop {
    pub disk: Disk,
    pub on_disk: RangeSet<u64>,
    pub size: u64,
    pub from_hasher: Receiver<ToWriter>,
    pub to_hasher: Sender<ToHasher>,
    pub pool: Arc<Pool>,
    pub recorder: Option<Recorder>,
}

impl WriteLoop {
    /// Returns the ranges on disk; the file is fsync'd when they cover it.
    pub fn run(mut self) -> io::Result<RangeSet<u64>> {
        let result = self.write();
        // Whatever happened, the hasher is waiting for this.
        let _ = self.to_hasher.send(ToHasher::WriterDone);
        if result.is_err() {
            self.pool.close();
        }
        result.map(|()| self.on_disk)
    }

    fn write(&mut self) -> io::Result<()> {
        let mut unrecorded = 0;
        let mut recorded = Instant::now();
        while let Ok(ToWriter::Write { buf, hashed }) = self.from_hasher.recv() {
            self.disk.write(&buf)?;
            let range = buf.offset()..buf.end();
            self.pool.give(buf);
            if range.is_empty() {
                continue;
            }
            if !hashed {
                let _ = self.to_hasher.send(ToHasher::Written(range.clone()));
            }
            unrecorded += range.end - range.start;
            self.on_disk.insert(range);
            if unrecorded >= RECORD_EVERY || recorded.elapsed() >= RECORD_AFTER {
                (unrecorded, recorded) = (0, Instant::now());
                self.record();
            }
        }
        let complete = self.size == 0 || self.on_disk.gaps(&(0..self.size)).next().is_none();
        if complete {
            self.disk.sync()?;
        }
        self.record();
        Ok(())
    }

    fn record(&mut self) {
        if let Some(recorder) = &mut self.recorder
            && let Err(e) = recorder(&self.on_disk)
        {
            // Only a later resume loses: it starts further back.
            tracing::warn!("cannot record the download's progress: {e}");
        }
    }
}
