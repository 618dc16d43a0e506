//! Publishing: where files live and how a verified partial file becomes visible.
//!
//! `cache_dir` holds only the Hugging Face Hub cache layout, so the real `huggingface_hub`
//! reads it offline and `scan_cache_dir()` finds nothing foreign:
//! `models--{org}--{name}/blobs/{sha256}`, `snapshots/{commit}/{path}` (a relative symlink to
//! the blob), `refs/{revision}` (the commit, no newline, written last), `.locks/`, `CACHEDIR.TAG`.
//! Partial downloads sit beside the blobs as `{sha256}.models-fetch.incomplete`.
//!
//! `store_dir` holds the stable paths consumers use, `{id}/{filename}` (a symlink to the blob)
//! and `by-chakra/{chakra}/{id}` (a symlink to the model's directory), plus `.models-fetch/`:
//! the lock, the stamps, and the blobs of files that do not come from a Hub repository.
//!
//! Every visible name changes in one rename, after the content is durable.

pub mod fsx;
pub mod lock;
pub mod stamp;

use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::index::Source;
use crate::plan::Item;
use stamp::Stamp;

/// The name of the state folder inside `store_dir`.
pub const STATE_DIR: &str = ".models-fetch";
/// The folder of chakra links inside `store_dir`; no model id may take this name.
pub const BY_CHAKRA: &str = "by-chakra";
const PARTIAL_SUFFIX: &str = ".models-fetch.incomplete";
/// The cache directory tag huggingface_hub writes (same signature, so backup tools skip it).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by models-fetch.\n";

/// Where everything lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub cache_dir: PathBuf,
    pub store_dir: PathBuf,
}

/// What is on disk for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The blob is the verified one and every link is in place.
    Published,
    /// The blob is the verified one; some link is missing or stale.
    NeedsLinks {
        commit: Option<String>,
    },
    /// A file sits at the blob's name that this program has not verified (or that changed).
    Unverified,
    Missing,
}

impl Layout {
    pub fn new(config: &Config) -> Self {
        Self { cache_dir: config.cache_dir.clone(), store_dir: config.store_dir.clone() }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.store_dir.join(STATE_DIR)
    }

    /// The locks held while running: one in the Hub cache's own lock folder, one in the state
    /// folder, so neither directory is shared by two instances.
    pub fn lock_paths(&self) -> Vec<PathBuf> {
        vec![self.cache_dir.join(".locks/models-fetch.lock"), self.state_dir().join("lock")]
    }

    /// The partial download of `item`: beside its blob, named by the expected sha256 so that a
    /// changed index entry never resumes old bytes.
    pub fn partial(&self, item: &Item) -> PathBuf {
        item.blob_path.with_file_name(format!("{}{PARTIAL_SUFFIX}", item.sha256))
    }

    pub fn stamp(&self, sha256: &str) -> PathBuf {
        self.state_dir().join("stamps").join(format!("{sha256}.json"))
    }

    pub fn chakra_link(&self, item: &Item) -> PathBuf {
        self.store_dir.join(BY_CHAKRA).join(&item.chakra).join(item.id.as_str())
    }

    /// Creates the top directories and the cache tag.
    pub fn prepare(&self) -> io::Result<()> {
        fsx::ensure_dir(&self.cache_dir)?;
        fsx::ensure_dir(&self.state_dir())?;
        let tag = self.cache_dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            fsx::write_atomic(&tag, CACHEDIR_TAG.as_bytes())?;
        }
        Ok(())
    }

    /// What is on disk for `item`, without reading the file's content.
    pub fn state(&self, item: &Item) -> State {
        let stamp = Stamp::read(&self.stamp(item.sha256.as_str()))
            .filter(|s| s.sha256 == item.sha256.as_str() && s.matches(&item.blob_path));
        match stamp {
            Some(stamp) if self.links_in_place(item, stamp.commit.as_deref()) => State::Published,
            Some(stamp) => State::NeedsLinks { commit: stamp.commit },
            None if item.blob_path.is_file() => State::Unverified,
            None => State::Missing,
        }
    }

    fn links_in_place(&self, item: &Item, commit: Option<&str>) -> bool {
        let points_at = |link: &Path, target: &Path| std::fs::read_link(link).is_ok_and(|t| t == target);
        let store_ok = points_at(&item.store_path, &fsx::relative_target(&item.blob_path, &item.store_path));
        let chakra_ok = points_at(&self.chakra_link(item), &chakra_target(item));
        let hub_ok = match (&item.source, commit) {
            (Source::Hub(hub), Some(commit)) => {
                let repo = self.cache_dir.join(hub.cache_folder());
                let snapshot = repo.join("snapshots").join(commit).join(&hub.path);
                let ref_ok = hub.revision == commit
                    || std::fs::read_to_string(repo.join("refs").join(&hub.revision))
                        .is_ok_and(|c| c == commit);
                points_at(&snapshot, &snapshot_target(&hub.path, item.sha256.as_str())) && ref_ok
            }
            _ => true,
        };
        store_ok && chakra_ok && hub_ok
    }

    /// Makes a verified partial file the blob: rename, then the stamp, then the links.
    pub fn publish(&self, item: &Item, partial: &Path, commit: Option<&str>) -> io::Result<()> {
        fsx::rename_into_place(partial, &item.blob_path)?;
        Stamp::of(&item.blob_path, item.sha256.as_str(), commit.map(str::to_owned))?
            .write(&self.stamp(item.sha256.as_str()))?;
        self.link(item, commit)
    }

    /// Records that the file already at the blob's name was verified (re-hashed) now.
    pub fn restamp(&self, item: &Item, commit: Option<&str>) -> io::Result<()> {
        Stamp::of(&item.blob_path, item.sha256.as_str(), commit.map(str::to_owned))?
            .write(&self.stamp(item.sha256.as_str()))
    }

    /// Creates or repairs every link to the blob of `item`. The Hub snapshot and ref need the
    /// commit; without one (a file from a mirror, never resolved on the Hub) they are left out.
    pub fn link(&self, item: &Item, commit: Option<&str>) -> io::Result<()> {
        if let Source::Hub(hub) = &item.source {
            let repo = self.cache_dir.join(hub.cache_folder());
            fsx::ensure_dir(&repo.join("snapshots"))?;
            if let Some(commit) = commit {
                let snapshot = repo.join("snapshots").join(commit).join(&hub.path);
                fsx::replace_symlink(&snapshot_target(&hub.path, item.sha256.as_str()), &snapshot)?;
                if hub.revision != commit {
                    // Last: a reader that finds the ref finds the snapshot and the blob.
                    let reference = repo.join("refs").join(&hub.revision);
                    if std::fs::read_to_string(&reference).ok().as_deref() != Some(commit) {
                        fsx::write_atomic(&reference, commit.as_bytes())?;
                    }
                }
            }
        }
        fsx::replace_symlink(&fsx::relative_target(&item.blob_path, &item.store_path), &item.store_path)?;
        fsx::replace_symlink(&chakra_target(item), &self.chakra_link(item))
    }
}

/// `snapshots/{commit}/{path}` -> `../../blobs/{sha256}`, one more `../` per folder in `path`.
fn snapshot_target(path: &str, sha256: &str) -> PathBuf {
    let depth = path.matches('/').count();
    PathBuf::from(format!("{}blobs/{sha256}", "../".repeat(2 + depth)))
}

/// `by-chakra/{chakra}/{id}` -> `../../{id}`.
fn chakra_target(item: &Item) -> PathBuf {
    PathBuf::from("../..").join(item.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_links_climb_one_level_per_folder() {
        assert_eq!(snapshot_target("model.bin", "ab"), Path::new("../../blobs/ab"));
        assert_eq!(snapshot_target("sub/dir/model.bin", "ab"), Path::new("../../../../blobs/ab"));
    }
}
