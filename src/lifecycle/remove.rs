//! What removing versions means on disk: a list of actions, each one path, surveyed first (so
//! `gc --dry-run` prints exactly what `gc` does), then carried out in order.
//!
//! Only what models-fetch wrote is ever listed: a link of a model no longer deployed that
//! points where models-fetch points it; a tree; a snapshot link that still points where the
//! record says; a ref that still holds the recorded commit, once its snapshot folder goes; a
//! blob whose stamp still matches it and that no snapshot link models-fetch is not removing
//! points at; its stamp; the record, last. A path anything kept needs is never listed.
//! Carried out in that order, a run killed at any point leaves every published model whole,
//! and the next run finishes the job.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::record::{RefFile, Version};
use crate::fsx;
use crate::layout::Layout;
use crate::publish;

/// What a removal is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    /// `{store_dir}/{id}` of a model no longer deployed.
    ModelLink,
    /// `by-chakra/{chakra}/{id}` of a model no longer deployed there.
    ChakraLink,
    Tree,
    Snapshot,
    Ref,
    Blob,
    Stamp,
    Record,
}

impl What {
    pub fn name(self) -> &'static str {
        match self {
            What::ModelLink => "model link",
            What::ChakraLink => "chakra link",
            What::Tree => "tree",
            What::Snapshot => "snapshot link",
            What::Ref => "ref",
            What::Blob => "blob",
            What::Stamp => "stamp",
            What::Record => "version record",
        }
    }
}

/// One path to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub what: What,
    pub path: PathBuf,
    /// The bytes removing it gives back (a blob's size when no other hard link keeps it).
    pub bytes: u64,
    /// The model it belonged to.
    pub model: String,
}

/// What everything kept needs: never removed.
#[derive(Debug, Default)]
pub struct Needed {
    pub blobs: HashSet<PathBuf>,
    pub shas: HashSet<String>,
    pub snapshots: HashSet<PathBuf>,
    pub refs: HashSet<(PathBuf, String)>,
    /// (model id, tree key).
    pub trees: HashSet<(String, String)>,
}

impl Needed {
    pub fn add_version(&mut self, version: &Version) {
        for file in &version.files {
            self.blobs.insert(file.blob.clone());
            self.shas.insert(file.sha256.clone());
        }
        self.snapshots.extend(version.snapshots.iter().map(|s| s.path.clone()));
        self.refs.extend(version.refs.iter().map(|r| (r.path.clone(), r.commit.clone())));
        self.trees.insert((version.id.clone(), version.key.clone()));
    }
}

/// The actions that remove `dropped` (records), sparing everything in `needed`.
pub fn versions(layout: &Layout, dropped: &[&Version], needed: &Needed) -> Vec<Action> {
    let mut actions = Vec::new();
    let removing: HashSet<PathBuf> = dropped
        .iter()
        .flat_map(|v| &v.snapshots)
        .filter(|s| layout.holds_hub_path(&s.path, "snapshots"))
        .filter(|s| !needed.snapshots.contains(&s.path) && points_at(&s.path, &s.target))
        .map(|s| s.path.clone())
        .collect();
    let mut listed: HashSet<PathBuf> = HashSet::new();
    let mut links = SnapshotLinks::default();
    // Shas of which some blob stays (needed, or linked from elsewhere): their stamp stays.
    let mut kept_shas: HashSet<&str> = HashSet::new();
    let mut blobs: Vec<(&str, &str)> = Vec::new();
    let mut blobs_listed: HashSet<&Path> = HashSet::new();
    for version in dropped {
        let model = version.id.as_str();
        let mut push = |what, path: PathBuf, bytes| {
            if listed.insert(path.clone()) {
                actions.push(Action { what, path, bytes, model: model.to_owned() });
            }
        };
        let tree = layout.tree_of(&version.id, &version.key);
        if !needed.trees.contains(&(version.id.clone(), version.key.clone()))
            && std::fs::symlink_metadata(&tree).is_ok()
        {
            push(What::Tree, tree, 0);
        }
        for link in version.snapshots.iter().filter(|s| removing.contains(&s.path)) {
            push(What::Snapshot, link.path.clone(), 0);
        }
        for reference in &version.refs {
            if layout.holds_hub_path(&reference.path, "refs") && ref_goes(reference, needed, &removing) {
                push(What::Ref, reference.path.clone(), 0);
            }
        }
        for file in &version.files {
            let blob = &file.blob;
            if blobs_listed.contains(blob.as_path()) {
                continue;
            }
            if needed.blobs.contains(blob) {
                kept_shas.insert(&file.sha256);
                continue;
            }
            let Some(bytes) = removable_blob(layout, blob, &file.sha256) else {
                kept_shas.insert(&file.sha256);
                continue;
            };
            if let Some(link) = links.other_than(blob, &removing) {
                tracing::info!(model_id = %version.id, blob = %blob.display(), link = %link.display(),
                    "keeping a blob that a snapshot models-fetch did not write links to");
                kept_shas.insert(&file.sha256);
                continue;
            }
            push(What::Blob, blob.clone(), bytes);
            blobs_listed.insert(blob);
            blobs.push((&file.sha256, model));
        }
    }
    for (sha256, model) in blobs {
        let stamp = layout.stamp(sha256);
        if !needed.shas.contains(sha256) && !kept_shas.contains(sha256) && listed.insert(stamp.clone()) {
            actions.push(Action { what: What::Stamp, path: stamp, bytes: 0, model: model.to_owned() });
        }
    }
    for version in dropped {
        let record = layout.version_record(&version.id, &version.key);
        actions.push(Action { what: What::Record, path: record, bytes: 0, model: version.id.clone() });
    }
    actions
}

/// The links of models no longer deployed (`deployed`: id -> chakra), and the trees no
/// record names that are not protected (`protected(id, key)`), which earlier versions left.
pub fn unrecorded(
    layout: &Layout,
    deployed: &HashMap<String, String>,
    recorded: &HashSet<(String, String)>,
    protected: &dyn Fn(&str, &str) -> bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let action = |what, path, model: &str| Action { what, path, bytes: 0, model: model.to_owned() };
    for (name, path) in entries(layout.store_dir()) {
        if !deployed.contains_key(&name) && Layout::linked_tree_key(&path, &name).is_some() {
            actions.push(action(What::ModelLink, path, &name));
        }
    }
    for (chakra, dir) in entries(&layout.by_chakra()) {
        for (name, path) in entries(&dir) {
            let ours = std::fs::read_link(&path).is_ok_and(|t| t == Layout::chakra_target_of(&name));
            if ours && deployed.get(&name) != Some(&chakra) {
                actions.push(action(What::ChakraLink, path, &name));
            }
        }
    }
    for (id, dir) in entries(&layout.all_trees()) {
        for (key, path) in entries(&dir) {
            let known = recorded.contains(&(id.clone(), key.clone()));
            if !key.starts_with('.') && !known && !protected(&id, &key) {
                actions.push(action(What::Tree, path, &id));
            }
        }
    }
    actions
}

/// Carries out `actions` in order, logging each: first everything but the records, then the
/// folders left empty by them or by an earlier run's removals of `dropped`, then the records
/// (so a run killed before a record goes is finished by the next). Returns the bytes given
/// back. A path already gone counts as done.
pub fn execute(layout: &Layout, actions: &[Action], dropped: &[&Version]) -> u64 {
    let (records, others): (Vec<&Action>, Vec<&Action>) =
        actions.iter().partition(|a| a.what == What::Record);
    let freed = others.iter().map(|a| remove_one(a)).sum();
    let mut paths: Vec<(What, PathBuf)> = others.iter().map(|a| (a.what, a.path.clone())).collect();
    for version in dropped {
        let snapshots =
            version.snapshots.iter().map(|s| &s.path).filter(|p| layout.holds_hub_path(p, "snapshots"));
        paths.extend(snapshots.map(|p| (What::Snapshot, p.clone())));
        let refs = version.refs.iter().map(|r| &r.path).filter(|p| layout.holds_hub_path(p, "refs"));
        paths.extend(refs.map(|p| (What::Ref, p.clone())));
        let blobs = version.files.iter().map(|f| &f.blob).filter(|p| layout.holds_blob(p));
        paths.extend(blobs.map(|p| (What::Blob, p.clone())));
    }
    tidy(layout, &paths);
    for record in &records {
        remove_one(record);
    }
    tidy(layout, &records.iter().map(|a| (a.what, a.path.clone())).collect::<Vec<_>>());
    freed
}

/// Removes one path; the bytes it gave back.
fn remove_one(action: &Action) -> u64 {
    let removed = match action.what {
        What::Tree => fsx::remove_any(&action.path),
        _ => std::fs::remove_file(&action.path),
    };
    match removed {
        Ok(()) => {
            tracing::info!(model_id = %action.model, path = %action.path.display(), bytes = action.bytes,
                "removed the {} {}", action.what.name(), action.path.display());
            action.bytes
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(model_id = %action.model, path = %action.path.display(),
                "cannot remove the {}: {e}", action.what.name());
            0
        }
    }
}

/// Removes the folders of `paths` (removed, or named by a removed version) left empty: a
/// snapshot's folders, a repository whose blobs, snapshots and refs are all gone, a model's
/// folders of trees and records, a chakra's folder. Only empty folders (`rmdir`); anything
/// another tool keeps there keeps them.
fn tidy(layout: &Layout, paths: &[(What, PathBuf)]) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut repos: HashSet<PathBuf> = HashSet::new();
    for (what, path) in paths {
        let Some(parent) = path.parent() else { continue };
        match what {
            What::Snapshot | What::Ref => {
                // Up to (not including) `snapshots/` or `refs/`.
                let mut dir = parent;
                while let Some(up) = dir.parent() {
                    if dir.file_name().is_some_and(|n| n == "snapshots" || n == "refs") {
                        if up.starts_with(layout.cache_dir()) && up != layout.cache_dir() {
                            repos.insert(up.to_owned());
                        }
                        break;
                    }
                    dirs.push(dir.to_owned());
                    dir = up;
                }
            }
            What::Blob => {
                if let Some(repo) =
                    parent.parent().filter(|r| r.starts_with(layout.cache_dir()) && *r != layout.cache_dir())
                {
                    repos.insert(repo.to_owned());
                }
            }
            What::Tree | What::Record | What::ChakraLink => dirs.push(parent.to_owned()),
            What::ModelLink | What::Stamp => {}
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
    for repo in repos {
        let parts = ["blobs", "snapshots", "refs"].map(|p| repo.join(p));
        if parts.iter().all(|p| is_empty_dir(p) || std::fs::symlink_metadata(p).is_err()) {
            for part in &parts {
                let _ = std::fs::remove_dir(part);
            }
            if std::fs::remove_dir(&repo).is_ok() {
                tracing::info!(path = %repo.display(), "removed the repository's empty folder");
            }
        }
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_none())
}

/// The entries of `dir` by name (none when it cannot be read).
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    read.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect()
}

fn points_at(link: &Path, target: &Path) -> bool {
    std::fs::read_link(link).is_ok_and(|t| t == target)
}

/// Whether the ref goes: it still holds the recorded commit, nothing kept wrote the same, and
/// its commit's snapshot folder holds nothing but links being removed.
fn ref_goes(reference: &RefFile, needed: &Needed, removing: &HashSet<PathBuf>) -> bool {
    let holds = fsx::read_bounded_string(&reference.path, fsx::REF).is_ok_and(|c| c == reference.commit);
    holds
        && !needed.refs.contains(&(reference.path.clone(), reference.commit.clone()))
        && walkdir::WalkDir::new(&reference.snapshot_dir)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| !e.file_type().is_dir())
            .all(|e| removing.contains(e.path()))
}

/// The bytes a blob gives back, when it is one models-fetch may remove: where this layout
/// keeps blobs, a regular file, and the one its stamp records (verified by models-fetch).
fn removable_blob(layout: &Layout, blob: &Path, sha256: &str) -> Option<u64> {
    if !layout.holds_blob(blob) {
        return None;
    }
    let meta = std::fs::symlink_metadata(blob).ok().filter(std::fs::Metadata::is_file)?;
    publish::verified(layout, blob, sha256)?;
    Some(if meta.nlink() <= 1 { meta.len() } else { 0 })
}

/// The snapshot links of each repository, by the blob they resolve to; read once per
/// repository.
#[derive(Default)]
struct SnapshotLinks {
    repos: HashMap<PathBuf, HashMap<PathBuf, Vec<PathBuf>>>,
}

impl SnapshotLinks {
    /// A snapshot link to `blob` that is not among `removing`.
    fn other_than(&mut self, blob: &Path, removing: &HashSet<PathBuf>) -> Option<PathBuf> {
        let repo = blob.parent()?.parent()?.to_owned();
        let by_target = self.repos.entry(repo.clone()).or_insert_with(|| {
            let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
            let walk = walkdir::WalkDir::new(repo.join("snapshots")).follow_links(false).into_iter();
            for entry in walk.filter_map(Result::ok).filter(|e| e.path_is_symlink()) {
                let Ok(target) = std::fs::read_link(entry.path()) else { continue };
                let resolved = lexical(&entry.path().parent().unwrap_or(&repo).join(target));
                map.entry(resolved).or_default().push(entry.into_path());
            }
            map
        });
        by_target.get(blob)?.iter().find(|l| !removing.contains(*l)).cloned()
    }
}

/// `path` with `.` and `..` taken away by their names (no symlink is followed).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_resolves_dot_dot_by_name() {
        assert_eq!(
            lexical(Path::new("/c/models--o--n/snapshots/abc/sub/../../../blobs/ff")),
            Path::new("/c/models--o--n/blobs/ff")
        );
        assert_eq!(lexical(Path::new("/a/./b")), Path::new("/a/b"));
    }
}
