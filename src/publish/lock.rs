//! One models-fetch per cache: an advisory lock (flock) held for the life of the process,
//! released by the kernel when the process ends however it ends, so a crash leaves no stale
//! lock. The holder's pid is written into the file for the error message of the second one.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsx;

/// Held locks; dropping releases them.
#[derive(Debug)]
pub struct CacheLock {
    _files: Vec<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: cannot create the lock file: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another models-fetch (pid {holder}) is already using this cache ({}); stop it first, or give each instance its own cache_dir and store_dir", path.display())]
    Held { path: PathBuf, holder: String },
}

impl CacheLock {
    /// Takes every lock in `paths`, or none.
    pub fn acquire(paths: &[PathBuf]) -> Result<Self, LockError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            files.push(lock_one(path)?);
        }
        Ok(Self { _files: files })
    }
}

fn lock_one(path: &Path) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A regular file, not through a symlink: a link planted here would have the truncation
    // below empty its target, and a FIFO would block the open.
    let mut file = fsx::open_regular_rw(path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let text = fsx::read_file_bounded(file, fsx::LOCK).unwrap_or_default();
            let holder = String::from_utf8_lossy(&text);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder }.to_owned();
            return Err(LockError::Held { path: path.to_owned(), holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".locks/models-fetch.lock");
        let first = CacheLock::acquire(std::slice::from_ref(&path)).unwrap();
        let err = CacheLock::acquire(std::slice::from_ref(&path)).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        CacheLock::acquire(&[path]).unwrap();
    }

    #[test]
    fn a_fifo_or_a_symlink_at_the_lock_is_refused_at_once() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.lock");
        let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let err = CacheLock::acquire(&[fifo]).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
        // A link to a file of the user's: never truncated through.
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep").unwrap();
        let link = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        let err = CacheLock::acquire(&[link]).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    }
}
