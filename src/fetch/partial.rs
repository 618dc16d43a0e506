//! What a partial file holds, read once before a download and then branched on: nothing to
//! keep, the first bytes of one stream, or the byte ranges of a parallel download that its
//! sidecar records.
//!
//! The sidecar, `{partial}.chunks`, records the byte ranges on disk of a parallel download,
//! rewritten in place every few MiB. It names the expected sha256 and size: a partial of other
//! content is never resumed. A stream's partial has no sidecar: its length is what is there.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rangemap::RangeSet;
use serde::{Deserialize, Serialize};

use crate::fsx;
use crate::sink::{Recorder, disk};
use crate::verify::Expected;

/// The state of a partial file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partial {
    /// No partial file, or an empty one, or one longer than the file: nothing to keep.
    Absent,
    /// The first `n` bytes (`0 < n <= size`) of one stream; no sidecar.
    Prefix(u64),
    /// A whole-size partial file of a parallel download, whose sidecar names this file: these
    /// ranges are on disk.
    Ranges(RangeSet<u64>),
    /// A sidecar that cannot be resumed from (another file's, unreadable, or beside a partial
    /// file of the wrong size): both are replaced.
    Stale,
}

impl Partial {
    /// Reads the partial file at `partial` and its sidecar, for a download of `expected`.
    pub fn read(partial: &Path, expected: &Expected) -> Self {
        let len = fsx::regular_len(partial);
        let sidecar = match fsx::read_bounded_nofollow(&sidecar_path(partial), fsx::SIDECAR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return if len == 0 || len > expected.size { Partial::Absent } else { Partial::Prefix(len) };
            }
            Err(_) => return Partial::Stale,
            Ok(bytes) => serde_json::from_slice::<Sidecar>(&bytes).ok(),
        };
        match sidecar {
            Some(sidecar)
                if sidecar.sha256 == expected.sha256.as_str()
                    && sidecar.size == expected.size
                    && len == expected.size
                    && sidecar.written.iter().all(|&(start, end)| start < end && end <= expected.size) =>
            {
                Partial::Ranges(sidecar.written.iter().map(|&(start, end)| start..end).collect())
            }
            _ => Partial::Stale,
        }
    }
}

/// The byte ranges of a partial file that are on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    sha256: String,
    size: u64,
    written: Vec<(u64, u64)>,
}

/// The sidecar of a partial file (the layout names it).
pub fn sidecar_path(partial: &Path) -> PathBuf {
    crate::layout::Layout::sidecar_of(partial)
}

/// Starts a parallel download afresh: a fresh sidecar, then an empty, preallocated, whole-size
/// partial file (sidecar first, so a whole-size partial never stands without one).
pub fn start_ranges(partial: &Path, expected: &Expected) -> io::Result<()> {
    let fresh = Sidecar { sha256: expected.sha256.to_string(), size: expected.size, written: Vec::new() };
    fsx::write_atomic(&sidecar_path(partial), &serde_json::to_vec(&fresh).expect("sidecar serializes"))?;
    disk::prepare_whole(partial, expected.size)
}

/// Rewrites the sidecar in place: one `pwrite` of the JSON padded with spaces to whole pages
/// (never shorter than before), so a killed process leaves the old record or the new one.
pub fn recorder(partial: &Path, expected: &Expected) -> io::Result<Recorder> {
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(sidecar_path(partial))?;
    let (sha256, size) = (expected.sha256.to_string(), expected.size);
    // Never shorter than the record already there (a resumed download's may be longer).
    let mut longest = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    Ok(Box::new(move |on_disk: &RangeSet<u64>| {
        let written = on_disk.iter().map(|r| (r.start, r.end)).collect();
        let mut json = serde_json::to_vec(&Sidecar { sha256: sha256.clone(), size, written })
            .expect("sidecar serializes");
        longest = longest.max(json.len().next_multiple_of(4096));
        json.resize(longest, b' ');
        file.write_all_at(&json, 0)
    }))
}

/// Removes the sidecar of a finished parallel download.
pub fn remove_sidecar(partial: &Path) {
    let _ = std::fs::remove_file(sidecar_path(partial));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(size: u64) -> Expected {
        Expected { sha256: crate::digest::hash_reader(&b"x"[..]).unwrap().0, size, git_oid: None }
    }

    #[test]
    fn the_state_is_read_from_the_partial_and_its_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("p");
        let e = expected(100);
        assert_eq!(Partial::read(&partial, &e), Partial::Absent);
        std::fs::write(&partial, b"").unwrap();
        assert_eq!(Partial::read(&partial, &e), Partial::Absent);
        std::fs::write(&partial, [1; 40]).unwrap();
        assert_eq!(Partial::read(&partial, &e), Partial::Prefix(40));
        std::fs::write(&partial, [1; 101]).unwrap();
        assert_eq!(Partial::read(&partial, &e), Partial::Absent, "longer than the file");

        start_ranges(&partial, &e).unwrap();
        assert_eq!(fsx::regular_len(&partial), 100);
        assert_eq!(Partial::read(&partial, &e), Partial::Ranges(RangeSet::new()));
        // Another file's sidecar, or a whole-size partial that lost its length: not resumed.
        assert_eq!(Partial::read(&partial, &expected(101)), Partial::Stale);
        std::fs::File::create(&partial).unwrap().set_len(60).unwrap();
        assert_eq!(Partial::read(&partial, &e), Partial::Stale);
        std::fs::write(sidecar_path(&partial), b"{not json").unwrap();
        assert_eq!(Partial::read(&partial, &e), Partial::Stale);
        remove(&partial);
        assert_eq!(Partial::read(&partial, &e), Partial::Absent);
        assert!(!sidecar_path(&partial).exists());
    }

    #[test]
    fn the_sidecar_is_rewritten_in_place_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("p");
        let sidecar = sidecar_path(&partial);
        let expected = expected(100);
        start_ranges(&partial, &expected).unwrap();
        let mut record = recorder(&partial, &expected).unwrap();
        let many: RangeSet<u64> = (0..40).map(|i| i * 2..i * 2 + 1).collect();
        record(&many).unwrap();
        let few: RangeSet<u64> = std::iter::once(0..60).collect();
        record(&few).unwrap();
        assert_eq!(std::fs::metadata(&sidecar).unwrap().len() % 4096, 0);
        assert_eq!(Partial::read(&partial, &expected), Partial::Ranges(few));
        // A resumed download's recorder: a shorter record over a longer one still reads back.
        let holes: RangeSet<u64> = (0..400).map(|i| i * 2_000_003..i * 2_000_003 + 1).collect();
        let big = Expected { size: 1 << 30, ..expected.clone() };
        std::fs::File::create(&partial).unwrap().set_len(1 << 30).unwrap();
        recorder(&partial, &big).unwrap()(&holes).unwrap();
        assert_eq!(Partial::read(&partial, &big), Partial::Ranges(holes));
        let whole: RangeSet<u64> = std::iter::once(0..400 * 2_000_003).collect();
        recorder(&partial, &big).unwrap()(&whole).unwrap();
        assert_eq!(Partial::read(&partial, &big), Partial::Ranges(whole), "the resume lost its progress");
    }
}
