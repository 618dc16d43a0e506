//! The daemon's state on disk, written off the runtime: the metrics file, then `state.json`,
//! each replaced atomically with fsync. A slow or stuck disk must not stall the runtime's only
//! thread (every download and the watchdog's heartbeat run there), so the runtime hands each
//! snapshot to a thread of its own and goes on. Only the latest snapshot matters: one that
//! arrives while the disk is busy replaces the one still waiting.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::state::{StateFile, metrics};
use crate::fsx;

/// What to write, and where.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub file: StateFile,
    /// The layout's `state.json`.
    pub state_path: PathBuf,
    /// The config's `metrics_file`, if any.
    pub metrics_path: Option<PathBuf>,
}

/// The waiting snapshot, and whether the writer is closed.
#[derive(Default)]
struct Slot {
    pending: Mutex<(Option<Snapshot>, bool)>,
    wake: Condvar,
}

/// The handle the runtime keeps: `send` never waits for the disk.
pub struct Writer {
    slot: Arc<Slot>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// A writer to the files each snapshot names.
    pub fn spawn() -> io::Result<Self> {
        Self::with(write)
    }

    /// A writer that hands every snapshot it takes to `write`, on its own thread.
    fn with(mut write: impl FnMut(&Snapshot) + Send + 'static) -> io::Result<Self> {
        let slot = Arc::new(Slot::default());
        let theirs = slot.clone();
        let thread = std::thread::Builder::new().name("state-writer".into()).spawn(move || {
            loop {
                let snapshot = {
                    let mut pending = theirs.pending.lock().expect("writer lock");
                    while pending.0.is_none() && !pending.1 {
                        pending = theirs.wake.wait(pending).expect("writer lock");
                    }
                    match pending.0.take() {
                        Some(snapshot) => snapshot,
                        None => return,
                    }
                };
                write(&snapshot);
            }
        })?;
        Ok(Self { slot, thread: Some(thread) })
    }

    /// Queues `snapshot` to be written, replacing any not written yet; returns at once.
    pub fn send(&self, snapshot: Snapshot) {
        self.slot.pending.lock().expect("writer lock").0 = Some(snapshot);
        self.slot.wake.notify_one();
    }

    /// Writes what is still waiting and stops the thread; blocks until it is written, so the
    /// runtime calls it through `spawn_blocking`.
    pub fn close(mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn stop(&self) {
        self.slot.pending.lock().expect("writer lock").1 = true;
        self.slot.wake.notify_one();
    }
}

impl Drop for Writer {
    /// Without `close`: the thread still writes what is waiting, then ends; nobody waits for it.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The metrics first, then the state file: a reader that sees a state sees metrics as new.
fn write(snapshot: &Snapshot) {
    if let Some(path) = &snapshot.metrics_path
        && let Err(e) = fsx::write_atomic(path, metrics(&snapshot.file).as_bytes())
    {
        tracing::warn!(metrics_file = %path.display(), "cannot write the metrics file: {e}");
    }
    if let Err(e) = snapshot.file.write(&snapshot.state_path) {
        tracing::warn!(state_file = %snapshot.state_path.display(), "cannot write the state file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn snapshot(n: u64) -> Snapshot {
        let file = StateFile {
            pid: 1,
            started_at: 0,
            updated_at: n,
            status: format!("snapshot {n}"),
            models: Default::default(),
            cache_bytes: 0,
            reclaimed_bytes_total: 0,
        };
        Snapshot { file, state_path: PathBuf::from("/nonexistent/state.json"), metrics_path: None }
    }

    /// A writer whose disk takes `delay` per write; the snapshots it wrote, in order.
    fn slow(delay: Duration) -> (Writer, Arc<Mutex<Vec<u64>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let log = written.clone();
        let writer = Writer::with(move |s: &Snapshot| {
            std::thread::sleep(delay);
            log.lock().unwrap().push(s.file.updated_at);
        })
        .unwrap();
        (writer, written)
    }

    #[test]
    fn a_slow_disk_does_not_delay_the_sender_and_only_the_latest_is_written() {
        let (writer, written) = slow(Duration::from_millis(300));
        let started = Instant::now();
        for n in 1..=100 {
            writer.send(snapshot(n));
            std::thread::sleep(Duration::from_millis(1));
        }
        let sending = started.elapsed();
        assert!(sending < Duration::from_millis(250), "100 sends took {sending:?} behind a slow disk");
        writer.close();
        let written = written.lock().unwrap().clone();
        assert_eq!(written.last(), Some(&100), "the latest snapshot is written last: {written:?}");
        assert!(written.len() <= 3, "snapshots waiting for the disk were not coalesced: {written:?}");
        assert!(written.windows(2).all(|w| w[0] < w[1]), "written out of order: {written:?}");
    }

    #[test]
    fn close_writes_what_is_waiting() {
        let (writer, written) = slow(Duration::ZERO);
        writer.send(snapshot(7));
        writer.close();
        assert_eq!(*written.lock().unwrap(), [7]);
    }

    #[test]
    fn the_state_file_is_written_after_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = snapshot(3);
        s.state_path = dir.path().join("state.json");
        s.metrics_path = Some(dir.path().join("metrics.prom"));
        let writer = Writer::spawn().unwrap();
        writer.send(s.clone());
        writer.close();
        assert_eq!(StateFile::read(&s.state_path), Ok(Some(s.file)));
        let metrics = std::fs::metadata(dir.path().join("metrics.prom")).unwrap();
        let state = std::fs::metadata(dir.path().join("state.json")).unwrap();
        assert!(metrics.modified().unwrap() <= state.modified().unwrap());
    }
}
