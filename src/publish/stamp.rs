//! Stamps: a record, per verified blob, of the file as it was when its sha256 was checked
//! (size, mtime, inode). A blob whose stamp still matches is known good without re-hashing; any
//! other file at a blob's name (left by another tool, or changed since) is hashed again first.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsx;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    /// The Hub commit the file was resolved at, when it came from the Hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Unix time of the verification.
    pub verified_at: u64,
}

impl Stamp {
    /// A stamp for the file at `blob`, verified now.
    pub fn of(blob: &Path, sha256: &str, commit: Option<String>) -> std::io::Result<Self> {
        let meta = std::fs::metadata(blob)?;
        let verified_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Self {
            sha256: sha256.to_owned(),
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            inode: meta.ino(),
            commit,
            verified_at,
        })
    }

    /// Whether the file at `blob` is still the one stamped.
    pub fn matches(&self, blob: &Path) -> bool {
        // symlink_metadata: a link planted at the blob's name is never the stamped file.
        std::fs::symlink_metadata(blob).is_ok_and(|meta| {
            meta.is_file()
                && meta.len() == self.size
                && meta.ino() == self.inode
                && mtime_ns(&meta) == self.mtime_ns
        })
    }

    /// The stamp at `path`, if it is a regular file of at most 64 KiB that holds one (anything
    /// else is no stamp: the blob is hashed again).
    pub fn read(path: &Path) -> Option<Self> {
        serde_json::from_slice(&fsx::read_bounded(path, fsx::STAMP).ok()?).ok()
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        fsx::write_atomic(path, &serde_json::to_vec(self).expect("a stamp serializes"))
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}
