//! The lock every edit of an index file holds for its whole read-modify-write, so that two
//! `entry --write` runs at once (two CI jobs adding models) each see the other's entry instead
//! of silently overwriting it. An advisory `flock` on `.{name}.lock` beside the index: the
//! kernel releases it when the process ends however it ends, so a crash leaves no stale lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long an edit waits for another edit of the same index before giving up.
pub(crate) const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

/// Held for as long as the value lives.
#[derive(Debug)]
pub(crate) struct IndexLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexLockError {
    #[error("{}: cannot create the lock file for editing the index: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: another edit of this index has held its lock for {}; nothing was written. \
         Run the edits one after another, or remove a hung process holding the lock",
        path.display(),
        humantime::format_duration(*waited)
    )]
    Busy { path: PathBuf, waited: Duration },
}

impl IndexLock {
    /// The lock file of `index`: `.{file name}.lock` in the same directory.
    pub(crate) fn path_for(index: &Path) -> PathBuf {
        let name = index.file_name().map_or_else(|| "index".into(), |n| n.to_string_lossy().into_owned());
        index.with_file_name(format!(".{name}.lock"))
    }

    /// Waits up to `wait` for the lock of `index`.
    pub(crate) fn acquire(index: &Path, wait: Duration) -> Result<Self, IndexLockError> {
        let path = Self::path_for(index);
        let io = |source| IndexLockError::Io { path: path.clone(), source };
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < wait => std::thread::sleep(POLL),
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(IndexLockError::Busy { path, waited: start.elapsed() });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_beside_the_index() {
        assert_eq!(
            IndexLock::path_for(Path::new("/srv/models/index.json")),
            Path::new("/srv/models/.index.json.lock")
        );
        assert_eq!(IndexLock::path_for(Path::new("index.json")), Path::new(".index.json.lock"));
    }

    #[test]
    fn a_second_edit_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index.json");
        let held = IndexLock::acquire(&index, WAIT).unwrap();
        let err = IndexLock::acquire(&index, Duration::from_millis(100)).unwrap_err().to_string();
        assert!(err.contains(".index.json.lock") && err.contains("nothing was written"), "{err}");
        drop(held);
        IndexLock::acquire(&index, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_waiting_edit_gets_the_lock_when_the_holder_ends() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index.json");
        let held = IndexLock::acquire(&index, WAIT).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        IndexLock::acquire(&index, Duration::from_secs(10)).unwrap();
        releaser.join().unwrap();
    }
}
