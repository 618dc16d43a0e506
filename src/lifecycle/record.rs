//! Version records: what models-fetch wrote for one published version of one model, so that
//! removing it later touches exactly that and nothing else. One JSON file per version,
//! `{store_dir}/.models-fetch/versions/{id}/{key}.json` (`key` the tree's), written when the
//! version is published (and again whenever it becomes the published one, as on a rollback).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsx;
use crate::item::Item;
use crate::layout::Layout;

/// One version of one model, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    /// The key of its tree (`.models-fetch/trees/{id}/{key}`).
    pub key: String,
    /// The index's `version` of the entry.
    pub version: String,
    pub chakra: String,
    /// When it last became the published version (ns since the epoch, strictly increasing per
    /// model): the newest kept versions are the ones with the highest.
    pub seq: u128,
    /// The Hub commit it was last published at, for a Hub model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub files: Vec<VersionFile>,
    /// Every snapshot link written for it (one commit's, or several when the revision moved
    /// to a commit of the same files).
    #[serde(default)]
    pub snapshots: Vec<SnapshotLink>,
    /// Every ref written for it, with the commit it held.
    #[serde(default)]
    pub refs: Vec<RefFile>,
}

/// One file of a version: where its blob is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub blob: PathBuf,
}

/// A snapshot link written for a version, and what it points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotLink {
    pub path: PathBuf,
    pub target: PathBuf,
}

/// A ref written for a version: the file, the commit it held, and that commit's snapshot
/// folder (the ref goes only when that folder does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefFile {
    pub path: PathBuf,
    pub commit: String,
    pub snapshot_dir: PathBuf,
}

impl Version {
    /// The record of `item` as published at `commit`, with sequence number `seq`.
    pub fn of(layout: &Layout, item: &Item, commit: Option<&str>, seq: u128) -> Self {
        let hub = item.hub().zip(commit);
        let files = item
            .files
            .iter()
            .map(|f| VersionFile {
                name: f.name.clone(),
                sha256: f.sha256.to_string(),
                size: f.size_bytes,
                blob: layout.blob(item, f),
            })
            .collect();
        let snapshots = hub.map_or_else(Vec::new, |(hub, commit)| {
            item.files
                .iter()
                .map(|f| SnapshotLink {
                    path: layout.snapshot(hub, commit, f),
                    target: Layout::snapshot_target(f),
                })
                .collect()
        });
        let refs = hub
            .and_then(|(hub, commit)| {
                let path = layout.reference(item)?;
                Some(RefFile {
                    path,
                    commit: commit.to_owned(),
                    snapshot_dir: layout.snapshot_dir(hub, commit),
                })
            })
            .into_iter()
            .collect();
        Self {
            id: item.id.to_string(),
            key: layout.tree_key(item),
            version: item.version.clone(),
            chakra: item.chakra.clone(),
            seq,
            commit: hub.map(|(_, c)| c.to_owned()),
            files,
            snapshots,
            refs,
        }
    }

    /// This record, also naming what `older` (a record of the same tree) wrote: the links of
    /// another commit stay known, so they go with the version.
    pub fn merged_with(mut self, older: &Version) -> Self {
        for link in &older.snapshots {
            if !self.snapshots.contains(link) {
                self.snapshots.push(link.clone());
            }
        }
        for reference in &older.refs {
            if !self.refs.contains(reference) {
                self.refs.push(reference.clone());
            }
        }
        self
    }

    /// The bytes of every file.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The record at `path`, when it is a regular file within its bound that holds one.
    pub fn read(path: &Path) -> Option<Self> {
        serde_json::from_slice(&fsx::read_bounded(path, fsx::VERSION).ok()?).ok()
    }

    pub fn write(&self, layout: &Layout) -> std::io::Result<()> {
        let path = layout.version_record(&self.id, &self.key);
        fsx::ensure_dir_within(&layout.state_dir(), path.parent().unwrap_or(&layout.versions_dir()))?;
        fsx::write_atomic(&path, &serde_json::to_vec_pretty(self).expect("a version record serializes"))
    }
}

/// Every readable record, of every model, oldest first. A record that cannot be read is
/// skipped with a warning (what it names is then never removed).
pub fn all(layout: &Layout) -> Vec<Version> {
    let mut versions = Vec::new();
    let Ok(ids) = std::fs::read_dir(layout.versions_dir()) else { return versions };
    for id in ids.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        let Ok(records) = std::fs::read_dir(id.path()) else { continue };
        for record in records.flatten() {
            let name = record.file_name().to_string_lossy().into_owned();
            if fsx::is_stale_temp(&name) || !name.ends_with(".json") {
                continue;
            }
            match Version::read(&record.path()) {
                Some(v) if record.path() == layout.version_record(&v.id, &v.key) => versions.push(v),
                _ => tracing::warn!(record = %record.path().display(),
                    "not a version record models-fetch wrote; what it names is left alone"),
            }
        }
    }
    versions.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    versions
}

/// The next sequence number for a version of `id`: now, or one more than the newest record of
/// `id` when the clock says otherwise.
pub fn next_seq(layout: &Layout, id: &str) -> u128 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let newest = std::fs::read_dir(layout.versions_dir().join(id))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Version::read(&e.path()))
        .map(|v| v.seq)
        .max();
    newest.map_or(now, |n| now.max(n + 1))
}

/// When a version became the published one, in seconds since the epoch.
pub fn seconds(seq: u128) -> u64 {
    u64::try_from(seq / 1_000_000_000).unwrap_or(u64::MAX)
}
