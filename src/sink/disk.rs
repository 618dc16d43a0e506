//! Writing buffers to the partial file: the aligned middle of each buffer with `O_DIRECT`
//! (no page-cache copy, no dirty pages to flush at the end), the unaligned edges of a range
//! through the page cache. Where `O_DIRECT` is refused (tmpfs, some FUSE and network file
//! systems) everything goes through the page cache, with write-back started as it goes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::buf::{ALIGN, Buf};
use crate::fsx;

/// Write-back of page-cache writes is started for every window of this size.
const WRITEBACK_WINDOW: u64 = 32 << 20;

pub struct Disk {
    buffered: File,
    direct: Option<File>,
    unflushed: u64,
    unflushed_from: u64,
}

impl Disk {
    /// Opens the partial file at `path` (which exists) for writing.
    pub fn open(path: &Path) -> io::Result<Self> {
        let buffered = fsx::open_partial(path, false)?;
        let direct = match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::debug!(path = %path.display(), "no O_DIRECT here ({e}); writing through the page cache");
                None
            }
        };
        Ok(Self { buffered, direct, unflushed: 0, unflushed_from: 0 })
    }

    /// Writes the buffer's bytes at their offset.
    pub fn write(&mut self, buf: &Buf) -> io::Result<()> {
        let (data, start, end) = (buf.data(), buf.offset(), buf.end());
        let align = ALIGN as u64;
        let a = start.next_multiple_of(align).min(end);
        let b = (end / align * align).max(a);
        let index = |at: u64| usize::try_from(at - start).expect("within one buffer");
        if b > a
            && let Some(direct) = &self.direct
        {
            self.buffered.write_all_at(&data[..index(a)], start)?;
            match direct.write_all_at(&data[index(a)..index(b)], a) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The device wants a larger alignment: the page cache from now on.
                    tracing::debug!("O_DIRECT write refused ({e}); writing through the page cache");
                    self.direct = None;
                    self.buffered.write_all_at(&data[index(a)..index(b)], a)?;
                }
                Err(e) => return Err(e),
            }
            return self.buffered.write_all_at(&data[index(b)..], b);
        }
        self.buffered.write_all_at(data, start)?;
        self.start_writeback(start, end);
        Ok(())
    }

    /// Starts write-back of page-cache writes window by window, so dirty pages do not pile up
    /// and the final fsync has little left to do.
    fn start_writeback(&mut self, start: u64, end: u64) {
        if self.unflushed == 0 {
            self.unflushed_from = start;
        }
        self.unflushed += end - start;
        if self.unflushed < WRITEBACK_WINDOW {
            return;
        }
        let from = self.unflushed_from.min(start);
        self.unflushed = 0;
        let (Ok(offset), Ok(len)) =
            (libc::off64_t::try_from(from), libc::off64_t::try_from(end.max(from) - from))
        else {
            return;
        };
        // SAFETY: plain syscall on a valid, open descriptor; failure only loses the head start.
        unsafe {
            libc::sync_file_range(self.buffered.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    /// Makes everything written durable.
    pub fn sync(&self) -> io::Result<()> {
        self.buffered.sync_all()
    }
}

/// Prepares the partial file at `path` for one stream: keeps its first `keep` bytes and
/// reserves room for `size` bytes without changing its length (the length still says how much
/// is there), so a full disk shows now, not half-way.
pub fn prepare_prefix(path: &Path, keep: u64, size: u64) -> io::Result<()> {
    let file = fsx::open_partial(path, false)?;
    file.set_len(keep)?;
    allocate(&file, size, libc::FALLOC_FL_KEEP_SIZE)
}

/// Creates the partial file at `path` empty, at its full size, with its blocks reserved (a
/// parallel download, whose sidecar says which ranges hold data).
pub fn prepare_whole(path: &Path, size: u64) -> io::Result<()> {
    let file = fsx::open_partial(path, true)?;
    allocate(&file, size, 0)?;
    if fsx::regular_len(path) < size { file.set_len(size) } else { Ok(()) }
}

/// `fallocate`; file systems without it are fine.
fn allocate(file: &File, size: u64, mode: libc::c_int) -> io::Result<()> {
    let Ok(len) = libc::off_t::try_from(size) else { return Ok(()) };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid, open descriptor.
    if unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, len) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(()),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::super::buf::Pool;
    use super::*;

    #[tokio::test]
    async fn unaligned_ranges_land_exactly() {
        for direct in [true, false] {
            unaligned_range_lands_exactly(direct).await;
        }
    }

    async fn unaligned_range_lands_exactly(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, vec![0u8; 3 * ALIGN + 5000]).unwrap();
        let mut disk = Disk::open(&path).unwrap();
        if !direct {
            // As where O_DIRECT is refused.
            disk.direct = None;
        }
        let pool = Pool::new(2);
        let data: Vec<u8> = (0..2 * ALIGN + 700).map(|i| (i % 251) as u8).collect();
        let mut buf = pool.take(1000).await.unwrap();
        buf.fill(&data);
        disk.write(&buf).unwrap();
        disk.sync().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[1000..1000 + data.len()], &data[..]);
        assert!(on_disk[..1000].iter().all(|&b| b == 0));
        assert!(on_disk[1000 + data.len()..].iter().all(|&b| b == 0));
    }
}
