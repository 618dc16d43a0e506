//! Atomic file-system steps: every name a reader can see changes in one rename, after the new
//! content is durable (fsync of the file, then of the directory).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A temp name beside `path`, unique to this call: `.{name}.{pid}.{n}.tmp` (two tasks may
/// replace the same name at once, e.g. the `refs/main` of two files of one repository).
fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Creates `dir` and its parents.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Creates `dir` below `root` so that every folder from `root` down is a real directory: a
/// symlink or file planted on the way is removed, never followed out of `root`.
pub fn ensure_dir_within(root: &Path, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let Ok(below) = dir.strip_prefix(root) else { return ensure_dir(dir) };
    let mut path = root.to_owned();
    for part in below.components() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                tracing::warn!(path = %path.display(), "not a directory (a planted link?): replacing it");
                fs::remove_file(&path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::create_dir(&path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other?,
        }
    }
    Ok(())
}

/// Opens a partial download for writing without following a symlink at its name (a link
/// planted there is removed first, and `O_NOFOLLOW` closes the race).
pub fn open_partial(path: &Path, truncate: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        tracing::warn!(path = %path.display(), "not a regular file (a planted link?): removing it");
        fs::remove_file(path)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a file for reading without following a symlink at its name.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// The length of the regular file at `path` (0 for none, or for anything else at that name).
pub fn regular_len(path: &Path) -> u64 {
    fs::symlink_metadata(path).ok().filter(std::fs::Metadata::is_file).map_or(0, |m| m.len())
}

/// Whether `name` is a temp name of this module left by another process: `.{..}.{pid}.{n}.tmp`.
pub fn is_stale_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else { return false };
    let mut parts = rest.rsplitn(3, '.');
    let (Some(n), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else { return false };
    n.parse::<u64>().is_ok() && pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id())
}

/// fsync of a directory, so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Renames a finished, fsync'd file onto its published name.
pub fn rename_into_place(from: &Path, to: &Path) -> io::Result<()> {
    ensure_dir(parent(to))?;
    fs::rename(from, to)?;
    sync_dir(parent(to))
}

/// Replaces `path` with `bytes` (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    ensure_dir(parent(path))?;
    let temp = temp_beside(path);
    let result = (|| {
        // create_new: never opens through a link planted at the temp name.
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(parent(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Points the symlink `link` at `target` (as written, usually relative), replacing whatever is
/// at `link` in one rename. A directory at `link` is not replaced.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    if fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    ensure_dir(parent(link))?;
    let temp = temp_beside(link);
    let _ = fs::remove_file(&temp);
    symlink(target, &temp)?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(parent(link))
}

/// The path from the directory holding `link` to `target`, when both are absolute or both
/// relative to the same place; `target` itself otherwise.
pub fn relative_target(target: &Path, link: &Path) -> PathBuf {
    let from = parent(link);
    let absolute = |p: &Path| {
        if p.is_absolute() { Some(p.to_owned()) } else { std::env::current_dir().ok().map(|d| d.join(p)) }
    };
    match (absolute(target), absolute(from)) {
        (Some(t), Some(f)) => pathdiff::diff_paths(t, f).unwrap_or_else(|| target.to_owned()),
        _ => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_replaced_atomically_and_relative() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("cache/blobs/abc");
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, "x").unwrap();
        let link = dir.path().join("store/model/file.bin");
        let target = relative_target(&blob, &link);
        assert_eq!(target, Path::new("../../cache/blobs/abc"));
        replace_symlink(&target, &link).unwrap();
        assert_eq!(fs::read_to_string(&link).unwrap(), "x");
        // Replacing an existing link, and a planted regular file, works the same way.
        fs::write(dir.path().join("cache/blobs/def"), "y").unwrap();
        replace_symlink(Path::new("../../cache/blobs/def"), &link).unwrap();
        assert_eq!(fs::read_to_string(&link).unwrap(), "y");
        let names: Vec<_> =
            fs::read_dir(link.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["file.bin"], "no temp names left");
    }

    #[test]
    fn concurrent_replacements_of_one_name_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs/main");
        std::thread::scope(|scope| {
            for i in 0..8 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, format!("{i}").as_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp names left");
    }

    #[test]
    fn write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs/main");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
