//! Publishing: how a verified partial file becomes visible, and what is on disk for a model.
//! Where each file lives is the layout's (`crate::layout`); this module only acts on it.
//!
//! Every visible name changes in one rename, after the content is durable. A model is
//! published as one unit: its blobs first (each verified, then stamped), then its snapshot
//! links, its tree, its ref, and last the one rename of `{store_dir}/{id}`.

pub mod lock;
pub mod stamp;

use std::io;
use std::path::{Path, PathBuf};

use crate::fsx;
use crate::item::{Item, ItemFile};
use crate::layout::Layout;
use stamp::Stamp;

/// The cache directory tag huggingface_hub writes (same signature, so backup tools skip it).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by models-fetch.\n";

/// What is on disk for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Every blob is the verified one and every link is in place.
    Published,
    /// Every blob is the verified one; some link is missing or stale.
    NeedsLinks { commit: Option<String> },
    /// Some file is missing, or sits at its blob's name unverified (or changed since).
    Incomplete,
}

/// What is on disk for one file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// The blob is the one verified; `commit` is the one its stamp recorded.
    Verified {
        commit: Option<String>,
    },
    /// A regular file sits at the blob's name that this program has not verified (or that
    /// changed since).
    Unverified,
    Missing,
}

/// Creates the top directories and the cache tag.
pub fn prepare(layout: &Layout) -> io::Result<()> {
    fsx::ensure_dir(layout.cache_dir())?;
    fsx::ensure_dir(&layout.state_dir())?;
    let tag = layout.cachedir_tag();
    if !tag.exists() {
        fsx::write_atomic(&tag, CACHEDIR_TAG.as_bytes())?;
    }
    Ok(())
}

/// What is on disk for `file` of `item`, without reading its content.
pub fn file_state(layout: &Layout, item: &Item, file: &ItemFile) -> FileState {
    let blob = layout.blob(item, file);
    match verified(layout, &blob, file.sha256.as_str()) {
        Some(stamp) => FileState::Verified { commit: stamp.commit },
        // Only a regular file counts: a link at the blob's name is replaced, not adopted.
        None if std::fs::symlink_metadata(&blob).is_ok_and(|m| m.is_file()) => FileState::Unverified,
        None => FileState::Missing,
    }
}

/// The stamp of `sha256`, when the file at `blob` is the one it records.
pub fn verified(layout: &Layout, blob: &Path, sha256: &str) -> Option<Stamp> {
    Stamp::read(&layout.stamp(sha256)).filter(|s| s.sha256 == sha256 && s.matches(blob))
}

/// What is on disk for `item`, without reading any file's content.
pub fn state(layout: &Layout, item: &Item) -> State {
    let mut commit = item.commit.clone();
    for file in &item.files {
        match file_state(layout, item, file) {
            FileState::Verified { commit: stamped } => {
                if commit.is_none() {
                    commit = stamped;
                }
            }
            FileState::Unverified | FileState::Missing => return State::Incomplete,
        }
    }
    if links_in_place(layout, item, commit.as_deref()) {
        State::Published
    } else {
        State::NeedsLinks { commit }
    }
}

fn points_at(link: &Path, target: &Path) -> bool {
    std::fs::read_link(link).is_ok_and(|t| t == target)
}

/// Whether the tree at `tree` has every file of `item` linked to its blob.
fn tree_complete(layout: &Layout, item: &Item, tree: &Path) -> bool {
    item.files.iter().all(|f| points_at(&Layout::tree_file(tree, f), &layout.tree_target(item, f)))
}

fn links_in_place(layout: &Layout, item: &Item, commit: Option<&str>) -> bool {
    let model_ok = points_at(&layout.model_link(item), &layout.model_link_target(item))
        && tree_complete(layout, item, &layout.tree(item));
    let chakra_ok = points_at(&layout.chakra_link(item), &Layout::chakra_target(item));
    let hub_ok = match (item.hub(), commit) {
        (Some(hub), Some(commit)) => {
            let ref_ok = layout
                .reference(item)
                .is_none_or(|r| fsx::read_bounded_string(&r, fsx::REF).is_ok_and(|c| c == commit));
            let snapshots_ok = item
                .files
                .iter()
                .all(|f| points_at(&layout.snapshot(hub, commit, f), &Layout::snapshot_target(f)));
            snapshots_ok && ref_ok
        }
        _ => true,
    };
    model_ok && chakra_ok && hub_ok
}

/// Makes the verified partial file of `file` its blob, then stamps it. Nothing a consumer
/// reads changes: the blob is reached only through links [`link`] makes once every file of
/// the model is in place.
pub fn install_blob(layout: &Layout, item: &Item, file: &ItemFile, commit: Option<&str>) -> io::Result<()> {
    fsx::rename_into_place(&layout.partial(item, file), &layout.blob(item, file))?;
    restamp(layout, item, file, commit)
}

/// Records that the file already at `file`'s blob name was verified (hashed, or linked from a
/// verified blob) now.
pub fn restamp(layout: &Layout, item: &Item, file: &ItemFile, commit: Option<&str>) -> io::Result<()> {
    let sha256 = file.sha256.as_str();
    Stamp::of(&layout.blob(item, file), sha256, commit.map(str::to_owned))?.write(&layout.stamp(sha256))
}

/// Publishes the model whose blobs are all verified and in place, every step one rename:
/// the snapshot links of `commit`, the model's tree, `refs/{revision}`, then the one rename of
/// `{store_dir}/{id}` onto the tree, so a reader sees the old complete model or the new
/// complete one; then the chakra link. Without a commit (a file from a mirror only, never
/// resolved on the Hub) the Hub snapshot and ref are left out. The tree replaced stays: what
/// goes, and when, is the lifecycle's (`crate::lifecycle`).
pub fn link(layout: &Layout, item: &Item, commit: Option<&str>) -> io::Result<()> {
    let cache = layout.cache_dir();
    if let Some(hub) = item.hub() {
        let repo = layout.hub_repo(hub);
        fsx::ensure_dir_within(cache, &repo.join("snapshots"))?;
        if let Some(commit) = commit {
            for file in &item.files {
                let snapshot = layout.snapshot(hub, commit, file);
                fsx::ensure_dir_within(cache, snapshot.parent().unwrap_or(&repo))?;
                fsx::replace_symlink(&Layout::snapshot_target(file), &snapshot)?;
            }
        }
    }
    build_tree(layout, item)?;
    if let (Some(commit), Some(reference)) = (commit, layout.reference(item)) {
        // After every snapshot link: a reader that finds the ref finds the whole snapshot.
        let repo = reference.parent().unwrap_or(cache);
        fsx::ensure_dir_within(cache, repo)?;
        if fsx::read_bounded_string(&reference, fsx::REF).ok().as_deref() != Some(commit) {
            fsx::write_atomic(&reference, commit.as_bytes())?;
        }
    }
    switch_model_link(layout, item)?;
    let store = layout.store_dir();
    let chakra_link = layout.chakra_link(item);
    fsx::ensure_dir_within(store, chakra_link.parent().unwrap_or(store))?;
    fsx::replace_symlink(&Layout::chakra_target(item), &chakra_link)
}

/// Builds the model's tree unless it is complete: every file's link made in a temp folder
/// beside it, then the folder renamed into place (exchanged with an incomplete one, which is
/// then removed).
fn build_tree(layout: &Layout, item: &Item) -> io::Result<()> {
    let tree = layout.tree(item);
    if tree_complete(layout, item, &tree) {
        return Ok(());
    }
    let trees = layout.trees(item);
    fsx::ensure_dir_within(layout.store_dir(), &trees)?;
    let temp = fsx::temp_beside(&tree);
    let built = (|| {
        fsx::ensure_dir(&temp)?;
        let mut dirs = vec![temp.clone()];
        for file in &item.files {
            let link = Layout::tree_file(&temp, file);
            let parent = link.parent().unwrap_or(&temp).to_owned();
            fsx::ensure_dir_within(&temp, &parent)?;
            std::os::unix::fs::symlink(layout.tree_target(item, file), &link)?;
            dirs.push(parent);
        }
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            fsx::sync_dir(dir)?;
        }
        if std::fs::symlink_metadata(&tree).is_ok() {
            fsx::exchange(&temp, &tree)?;
            fsx::remove_any(&temp)?;
        } else {
            std::fs::rename(&temp, &tree)?;
        }
        fsx::sync_dir(&trees)
    })();
    if built.is_err() {
        let _ = fsx::remove_any(&temp);
    }
    built
}

/// Points `{store_dir}/{id}` at the model's tree in one rename. An install of the layout before trees (a real
/// folder holding `{filename}` links) is exchanged with the link in one step, then removed.
fn switch_model_link(layout: &Layout, item: &Item) -> io::Result<()> {
    let (link, target) = (layout.model_link(item), layout.model_link_target(item));
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if meta.is_dir() => {
            let temp = fsx::temp_beside(&link);
            std::os::unix::fs::symlink(&target, &temp)?;
            match fsx::exchange(&temp, &link) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                    // A file system without RENAME_EXCHANGE: two renames, a moment apart.
                    let old = fsx::temp_beside(&link);
                    std::fs::rename(&link, &old)?;
                    std::fs::rename(&temp, &link)?;
                    std::fs::rename(&old, &temp)?;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
            }
            fsx::sync_dir(layout.store_dir())?;
            tracing::info!(model_id = %item.id, path = %link.display(), "moved the model's folder to its tree");
            fsx::remove_any(&temp)?;
        }
        _ => fsx::replace_symlink(&target, &link)?,
    }
    Ok(())
}

/// Creates the folder of `item`'s blobs and partial files, every level a real directory.
pub fn prepare_item(layout: &Layout, item: &Item) -> io::Result<()> {
    fsx::ensure_dir_within(&layout.blob_root(item), &layout.blob_dir(item))
}

/// Removes what a killed run left: temp names of atomic replacements (files, links, and the
/// folders of a tree being built or an old model folder being removed), and partial downloads
/// (with their sidecars) of files no model in `items` needs any more. Run under the lock.
pub fn sweep(layout: &Layout, items: &[Item]) {
    let wanted: std::collections::HashSet<&str> =
        items.iter().flat_map(|i| i.files.iter().map(|f| f.sha256.as_str())).collect();
    let mut dirs: Vec<PathBuf> = vec![layout.store_dir().to_owned()];
    for item in items {
        dirs.push(layout.blob_dir(item));
        // Every folder of every tree of the model (the current one and the one kept before).
        let trees = walkdir::WalkDir::new(layout.trees(item)).follow_links(false).into_iter();
        dirs.extend(trees.filter_map(Result::ok).filter(|e| e.file_type().is_dir()).map(|e| e.into_path()));
        dirs.extend(layout.chakra_link(item).parent().map(Path::to_path_buf));
        if let Some(reference) = layout.reference(item) {
            dirs.extend(reference.parent().map(Path::to_path_buf));
        }
    }
    for item in items {
        dirs.push(layout.versions_dir().join(item.id.as_str()));
    }
    dirs.push(layout.stamps_dir());
    dirs.push(layout.state_dir());
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_partial = Layout::partial_sha256(&name).is_some_and(|sha| !wanted.contains(sha));
            if fsx::is_stale_temp(&name) || stale_partial {
                tracing::info!(path = %entry.path().display(), "removing what an earlier run left");
                let _ = fsx::remove_any(&entry.path());
            }
        }
    }
}
