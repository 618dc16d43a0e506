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

pub mod lock;
pub mod stamp;

use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::fsx;
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
            // Only a regular file counts: a link at the blob's name is replaced, not adopted.
            None if std::fs::symlink_metadata(&item.blob_path).is_ok_and(|m| m.is_file()) => {
                State::Unverified
            }
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
                    || fsx::read_bounded_string(&repo.join("refs").join(&hub.revision), fsx::REF)
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
            fsx::ensure_dir_within(&self.cache_dir, &repo.join("snapshots"))?;
            if let Some(commit) = commit {
                let snapshot = repo.join("snapshots").join(commit).join(&hub.path);
                fsx::ensure_dir_within(&self.cache_dir, snapshot.parent().unwrap_or(&repo))?;
                fsx::replace_symlink(&snapshot_target(&hub.path, item.sha256.as_str()), &snapshot)?;
                if hub.revision != commit {
                    // Last: a reader that finds the ref finds the snapshot and the blob.
                    let reference = repo.join("refs").join(&hub.revision);
                    fsx::ensure_dir_within(&self.cache_dir, reference.parent().unwrap_or(&repo))?;
                    if fsx::read_bounded_string(&reference, fsx::REF).ok().as_deref() != Some(commit) {
                        fsx::write_atomic(&reference, commit.as_bytes())?;
                    }
                }
            }
        }
        let chakra_link = self.chakra_link(item);
        for link in [&item.store_path, &chakra_link] {
            fsx::ensure_dir_within(&self.store_dir, link.parent().unwrap_or(&self.store_dir))?;
        }
        fsx::replace_symlink(&fsx::relative_target(&item.blob_path, &item.store_path), &item.store_path)?;
        fsx::replace_symlink(&chakra_target(item), &chakra_link)
    }

    /// The root a model's blob lives under: the Hub cache, or the state folder.
    fn blob_root(&self, item: &Item) -> PathBuf {
        match item.source {
            Source::Hub(_) => self.cache_dir.clone(),
            Source::Url(_) => self.state_dir(),
        }
    }

    /// Creates the folder of `item`'s blob and partial file, every level a real directory.
    pub fn prepare_item(&self, item: &Item) -> io::Result<()> {
        fsx::ensure_dir_within(&self.blob_root(item), item.blob_path.parent().unwrap_or(&self.cache_dir))
    }

    /// Removes what a killed run left: temp names of atomic replacements, and partial downloads
    /// (with their sidecars) of files no model in `items` needs any more. Run under the lock.
    pub fn sweep(&self, items: &[Item]) {
        let wanted: std::collections::HashSet<&str> = items.iter().map(|i| i.sha256.as_str()).collect();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for item in items {
            dirs.extend(item.blob_path.parent().map(Path::to_path_buf));
            dirs.extend(item.store_path.parent().map(Path::to_path_buf));
            dirs.extend(self.chakra_link(item).parent().map(Path::to_path_buf));
            if let Source::Hub(hub) = &item.source {
                dirs.push(self.cache_dir.join(hub.cache_folder()).join("refs"));
            }
        }
        dirs.push(self.state_dir().join("stamps"));
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale_partial = name.split_once(PARTIAL_SUFFIX).is_some_and(|(sha, rest)| {
                    (rest.is_empty() || rest == ".chunks") && !wanted.contains(sha)
                });
                if fsx::is_stale_temp(&name) || stale_partial {
                    tracing::info!(path = %entry.path().display(), "removing what an earlier run left");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
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
