//! Publishing: how a verified partial file becomes visible, and what is on disk for a model.
//! Where each file lives is the layout's (`crate::layout`); this module only acts on it.
//!
//! Every visible name changes in one rename, after the content is durable.

pub mod lock;
pub mod stamp;

use std::io;
use std::path::{Path, PathBuf};

use crate::fsx;
use crate::index::Source;
use crate::item::Item;
use crate::layout::Layout;
use stamp::Stamp;

/// The cache directory tag huggingface_hub writes (same signature, so backup tools skip it).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by models-fetch.\n";

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

/// What is on disk for `item`, without reading the file's content.
pub fn state(layout: &Layout, item: &Item) -> State {
    let blob = layout.blob(item);
    let stamp =
        Stamp::read(&layout.stamp(item)).filter(|s| s.sha256 == item.sha256.as_str() && s.matches(&blob));
    match stamp {
        Some(stamp) if links_in_place(layout, item, stamp.commit.as_deref()) => State::Published,
        Some(stamp) => State::NeedsLinks { commit: stamp.commit },
        // Only a regular file counts: a link at the blob's name is replaced, not adopted.
        None if std::fs::symlink_metadata(&blob).is_ok_and(|m| m.is_file()) => State::Unverified,
        None => State::Missing,
    }
}

fn links_in_place(layout: &Layout, item: &Item, commit: Option<&str>) -> bool {
    let points_at = |link: &Path, target: &Path| std::fs::read_link(link).is_ok_and(|t| t == target);
    let store_ok = points_at(&layout.store_path(item), &layout.store_target(item));
    let chakra_ok = points_at(&layout.chakra_link(item), &Layout::chakra_target(item));
    let hub_ok = match (&item.source, commit) {
        (Source::Hub(hub), Some(commit)) => {
            let ref_ok = hub.revision == commit
                || fsx::read_bounded_string(&layout.reference(hub), fsx::REF).is_ok_and(|c| c == commit);
            points_at(&layout.snapshot(hub, commit), &Layout::snapshot_target(hub, item)) && ref_ok
        }
        _ => true,
    };
    store_ok && chakra_ok && hub_ok
}

/// Makes the verified partial file of `item` its blob: rename, then the stamp, then the links.
pub fn publish(layout: &Layout, item: &Item, commit: Option<&str>) -> io::Result<()> {
    fsx::rename_into_place(&layout.partial(item), &layout.blob(item))?;
    restamp(layout, item, commit)?;
    link(layout, item, commit)
}

/// Records that the file already at the blob's name was verified (re-hashed) now.
pub fn restamp(layout: &Layout, item: &Item, commit: Option<&str>) -> io::Result<()> {
    Stamp::of(&layout.blob(item), item.sha256.as_str(), commit.map(str::to_owned))?.write(&layout.stamp(item))
}

/// Creates or repairs every link to the blob of `item`. The Hub snapshot and ref need the
/// commit; without one (a file from a mirror, never resolved on the Hub) they are left out.
pub fn link(layout: &Layout, item: &Item, commit: Option<&str>) -> io::Result<()> {
    let cache = layout.cache_dir();
    if let Source::Hub(hub) = &item.source {
        let repo = layout.hub_repo(hub);
        fsx::ensure_dir_within(cache, &repo.join("snapshots"))?;
        if let Some(commit) = commit {
            let snapshot = layout.snapshot(hub, commit);
            fsx::ensure_dir_within(cache, snapshot.parent().unwrap_or(&repo))?;
            fsx::replace_symlink(&Layout::snapshot_target(hub, item), &snapshot)?;
            if hub.revision != commit {
                // Last: a reader that finds the ref finds the snapshot and the blob.
                let reference = layout.reference(hub);
                fsx::ensure_dir_within(cache, reference.parent().unwrap_or(&repo))?;
                if fsx::read_bounded_string(&reference, fsx::REF).ok().as_deref() != Some(commit) {
                    fsx::write_atomic(&reference, commit.as_bytes())?;
                }
            }
        }
    }
    let store = layout.store_dir();
    let (store_path, chakra_link) = (layout.store_path(item), layout.chakra_link(item));
    for link in [&store_path, &chakra_link] {
        fsx::ensure_dir_within(store, link.parent().unwrap_or(store))?;
    }
    fsx::replace_symlink(&layout.store_target(item), &store_path)?;
    fsx::replace_symlink(&Layout::chakra_target(item), &chakra_link)
}

/// Creates the folder of `item`'s blob and partial file, every level a real directory.
pub fn prepare_item(layout: &Layout, item: &Item) -> io::Result<()> {
    fsx::ensure_dir_within(&layout.blob_root(item), &layout.blob_dir(item))
}

/// Removes what a killed run left: temp names of atomic replacements, and partial downloads
/// (with their sidecars) of files no model in `items` needs any more. Run under the lock.
pub fn sweep(layout: &Layout, items: &[Item]) {
    let wanted: std::collections::HashSet<&str> = items.iter().map(|i| i.sha256.as_str()).collect();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for item in items {
        dirs.push(layout.blob_dir(item));
        dirs.extend(layout.store_path(item).parent().map(Path::to_path_buf));
        dirs.extend(layout.chakra_link(item).parent().map(Path::to_path_buf));
        if let Source::Hub(hub) = &item.source {
            dirs.extend(layout.reference(hub).parent().map(Path::to_path_buf));
        }
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
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
