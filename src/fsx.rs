//! Atomic file-system steps: every name a reader can see changes in one rename, after the new
//! content is durable (fsync of the file, then of the directory). And bounded reads: every file
//! the program reads is opened with [`open_regular`] (a FIFO or a device at its name is refused,
//! never read into a hang or without end) and read whole only with [`read_bounded`], under the
//! [`Limit`] of its kind.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A temp name beside `path`, unique to this call: `.{name}.{pid}.{n}.tmp` (two tasks may
/// replace the same name at once, e.g. the `refs/main` of two files of one repository).
pub fn temp_beside(path: &Path) -> PathBuf {
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

/// Opens a regular file for reading without following a symlink at its name (see
/// [`open_regular`]; a symlink there is refused like any other non-regular file).
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    open_checked(path, fs::OpenOptions::new().read(true), false)
}

/// How much of a file of one kind is read at most, and what that kind is called in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    /// The kind of file, with its article: "a config file".
    pub what: &'static str,
}

/// The config (TOML or JSON): a few hundred lines at most.
pub const CONFIG: Limit = Limit { bytes: 1 << 20, what: "a config file" };
/// The index: every model of a fleet, with its metadata.
pub const INDEX: Limit = Limit { bytes: 64 << 20, what: "an index" };
/// The token file: a Hub token is about 40 bytes, and a header far above 4 KiB is refused by
/// servers (431), public requests included.
pub const TOKEN: Limit = Limit { bytes: 4 << 10, what: "a token file" };
/// `ca_file`: a PEM bundle (the whole Mozilla bundle is about 200 KiB).
pub const CA_FILE: Limit = Limit { bytes: 16 << 20, what: "a ca_file" };
/// The daemon's `state.json`: a few hundred bytes per model.
pub const STATE: Limit = Limit { bytes: 64 << 20, what: "a state file" };
/// A blob's stamp: one small JSON record.
pub const STAMP: Limit = Limit { bytes: 64 << 10, what: "a stamp" };
/// A partial file's byte-range sidecar: the ranges written so far, padded to pages.
pub const SIDECAR: Limit = Limit { bytes: 16 << 20, what: "a byte-range sidecar" };
/// A Hub ref (`refs/main`): a 40-character commit.
pub const REF: Limit = Limit { bytes: 4 << 10, what: "a Hub ref" };
/// A version record (`.models-fetch/versions/{id}/{key}.json`): every file of one version.
pub const VERSION: Limit = Limit { bytes: 16 << 20, what: "a version record" };
/// A lock file: the holder's pid.
pub const LOCK: Limit = Limit { bytes: 4 << 10, what: "a lock file" };

/// A mirror's credentials file: a bearer token or `user:password`, one header's worth.
pub const MIRROR_CREDENTIALS: Limit = Limit { bytes: 4 << 10, what: "a mirror credentials file" };

/// Every limit, for the documentation's table and its test.
#[cfg(test)]
pub const LIMITS: [Limit; 11] =
    [CONFIG, INDEX, TOKEN, CA_FILE, STATE, STAMP, SIDECAR, REF, VERSION, LOCK, MIRROR_CREDENTIALS];

/// What a path names when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Symlink,
}

impl FileKind {
    fn of(meta: &fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_file() {
            None
        } else if t.is_dir() {
            Some(Self::Directory)
        } else if t.is_fifo() {
            Some(Self::Fifo)
        } else if t.is_char_device() {
            Some(Self::CharDevice)
        } else if t.is_block_device() {
            Some(Self::BlockDevice)
        } else if t.is_socket() {
            Some(Self::Socket)
        } else {
            Some(Self::Symlink)
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Directory => "a directory",
            Self::Fifo => "a FIFO (named pipe)",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Socket => "a socket",
            Self::Symlink => "a symlink",
        }
    }
}

/// The cause inside the `io::Error` of a path that is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is {}, not a regular file (only regular files are read)", kind.name())]
pub struct NotRegular {
    pub kind: FileKind,
}

/// The cause inside the `io::Error` of a file larger than its [`Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub limit: Limit,
    /// The file's size, when its metadata gave it (not when it grew while being read).
    pub size: Option<u64>,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Limit { bytes, what } = self.limit;
        match self.size {
            Some(size) => write!(f, "is {size} bytes, larger than {} (the limit for {what})", human(bytes)),
            None => write!(f, "is larger than {} (the limit for {what})", human(bytes)),
        }
    }
}

impl std::error::Error for TooLarge {}

/// `4 KiB`, `64 MiB`, or bytes.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The typed cause `T` ([`NotRegular`], [`TooLarge`]) of an error of this module, if it is one.
pub fn cause<T: std::error::Error + 'static>(e: &io::Error) -> Option<&T> {
    e.get_ref()?.downcast_ref::<T>()
}

fn check_regular(meta: &fs::Metadata) -> io::Result<()> {
    match FileKind::of(meta) {
        None => Ok(()),
        Some(kind) => {
            let io_kind = if kind == FileKind::Directory {
                io::ErrorKind::IsADirectory
            } else {
                io::ErrorKind::InvalidInput
            };
            Err(io::Error::new(io_kind, NotRegular { kind }))
        }
    }
}

/// Opens `path` with `options` only if it is a regular file (following symlinks at it when
/// `follow`). A device is never opened (the name is checked first: opening some has effects),
/// and the open itself is non-blocking, so a FIFO swapped in after the check does not block
/// it either; the opened file is checked again (fstat) and then made blocking for reads.
fn open_checked(path: &Path, options: &mut fs::OpenOptions, follow: bool) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let named = if follow { fs::metadata(path) } else { fs::symlink_metadata(path) };
    match named {
        Ok(meta) => check_regular(&meta)?,
        // Nothing there: the open reports it (or creates the file, if `options` say so).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    // O_CLOEXEC is std's default.
    let file = options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | nofollow).open(path)?;
    check_regular(&file.metadata()?)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns, with flags it read from it.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// Opens the regular file at `path` (or a symlink's regular target) for reading. A FIFO, a
/// device, a socket or a directory is refused at once with a [`NotRegular`] cause naming
/// what it is; never opened into a hang.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_checked(path, fs::OpenOptions::new().read(true), true)
}

/// Opens (creating it if missing) the regular file at `path` for reading and writing, without
/// following a symlink at its name: a lock file.
pub fn open_regular_rw(path: &Path) -> io::Result<File> {
    open_checked(path, fs::OpenOptions::new().read(true).write(true).create(true).truncate(false), false)
}

/// Reads the regular file at `path` whole, if it holds at most `limit` bytes; else an error
/// with a [`TooLarge`] cause, without reading more than `limit` + 1 bytes (however large the
/// file is, or grows while it is read).
pub fn read_bounded(path: &Path, limit: Limit) -> io::Result<Vec<u8>> {
    read_file_bounded(open_regular(path)?, limit)
}

/// [`read_bounded`] without following a symlink at `path`.
pub fn read_bounded_nofollow(path: &Path, limit: Limit) -> io::Result<Vec<u8>> {
    read_file_bounded(open_nofollow(path)?, limit)
}

/// [`read_bounded`] of UTF-8 text.
pub fn read_bounded_string(path: &Path, limit: Limit) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// Reads an open file from where it is, to its end, if at most `limit` bytes are left.
pub fn read_file_bounded(file: File, limit: Limit) -> io::Result<Vec<u8>> {
    let too_large = |size| io::Error::new(io::ErrorKind::FileTooLarge, TooLarge { limit, size });
    let len = file.metadata()?.len();
    if len > limit.bytes {
        return Err(too_large(Some(len)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit.bytes {
        return Err(too_large(None));
    }
    Ok(bytes)
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

/// Swaps the names `a` and `b` in one step (`renameat2` with `RENAME_EXCHANGE`; both must
/// exist), then fsyncs their folder. `EINVAL` or `ENOSYS` where the file system or the kernel
/// cannot.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths; renameat2 reads them only.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    sync_dir(parent(b))
}

/// Removes whatever is at `path`: a folder with everything in it (links inside are removed,
/// never followed), or a file or a link.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
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

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
    }

    fn kind_of(e: &io::Error) -> Option<FileKind> {
        cause::<NotRegular>(e).map(|c| c.kind)
    }

    #[test]
    fn only_regular_files_are_opened_and_a_fifo_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let zero = dir.path().join("zero");
        symlink("/dev/zero", &zero).unwrap();
        let regular = dir.path().join("regular");
        fs::write(&regular, "x").unwrap();
        let link = dir.path().join("link");
        symlink(&regular, &link).unwrap();
        let started = std::time::Instant::now();
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(kind_of(&e), Some(FileKind::Fifo));
        assert_eq!(e.to_string(), "is a FIFO (named pipe), not a regular file (only regular files are read)");
        assert_eq!(kind_of(&open_regular(&zero).unwrap_err()), Some(FileKind::CharDevice));
        assert_eq!(kind_of(&open_regular(dir.path()).unwrap_err()), Some(FileKind::Directory));
        assert_eq!(kind_of(&open_nofollow(&fifo).unwrap_err()), Some(FileKind::Fifo));
        assert_eq!(kind_of(&open_regular_rw(&fifo).unwrap_err()), Some(FileKind::Fifo));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
        // A symlink to a regular file is followed by open_regular only.
        assert_eq!(io::read_to_string(open_regular(&link).unwrap()).unwrap(), "x");
        assert_eq!(kind_of(&open_nofollow(&link).unwrap_err()), Some(FileKind::Symlink));
        assert_eq!(open_regular(&dir.path().join("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn an_opened_file_reads_blocking() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        let file = open_regular(&path).unwrap();
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        let rw = open_regular_rw(&dir.path().join("created")).unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(rw.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert!(dir.path().join("created").is_file());
    }

    #[test]
    fn reads_are_bounded_and_name_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let limit = Limit { bytes: 4 << 10, what: "a token file" };
        let path = dir.path().join("f");
        fs::write(&path, vec![b'a'; 4 << 10]).unwrap();
        assert_eq!(read_bounded(&path, limit).unwrap().len(), 4 << 10);
        fs::write(&path, vec![b'a'; (4 << 10) + 1]).unwrap();
        let e = read_bounded(&path, limit).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(cause::<TooLarge>(&e), Some(&TooLarge { limit, size: Some(4097) }));
        assert_eq!(e.to_string(), "is 4097 bytes, larger than 4 KiB (the limit for a token file)");
        // Text, and /dev/zero through a link.
        fs::write(&path, [0xff]).unwrap();
        assert!(read_bounded_string(&path, limit).unwrap_err().to_string().contains("not UTF-8"));
        let zero = dir.path().join("zero");
        symlink("/dev/zero", &zero).unwrap();
        assert_eq!(kind_of(&read_bounded(&zero, limit).unwrap_err()), Some(FileKind::CharDevice));
        assert_eq!(kind_of(&read_bounded_nofollow(&zero, limit).unwrap_err()), Some(FileKind::Symlink));
    }

    #[test]
    fn limits_read_as_sizes() {
        assert_eq!(human(CONFIG.bytes), "1 MiB");
        assert_eq!(human(TOKEN.bytes), "4 KiB");
        assert_eq!(human(1000), "1000 bytes");
        let e = TooLarge { limit: INDEX, size: None };
        assert_eq!(e.to_string(), "is larger than 64 MiB (the limit for an index)");
        for limit in LIMITS {
            assert!(limit.what.starts_with("a ") || limit.what.starts_with("an "), "{limit:?}");
        }
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
