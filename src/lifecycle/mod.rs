//! The lifecycle of published versions: what was published is recorded (`record`); what is
//! neither deployed nor kept is removed (`gc`), only ever what models-fetch itself wrote
//! (`remove`); when a download would be refused for lack of space, kept versions are given
//! back first (`make_room`).
//!
//! Which versions stay is decided from the records and the plan alone (`choose`): a model's
//! published version, the version the index wants, and the newest `keep_previous` others.
//! Every step that changes a model's links or removes a version holds one process-wide lock,
//! so a removal never races a publish of this process (another process is kept out by the
//! cache lock).

pub mod choose;
pub mod record;
pub mod remove;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use crate::item::Item;
use crate::layout::Layout;
use crate::publish;
use choose::Protected;
use record::Version;
use remove::{Action, Needed, What};

/// Held while a model is linked and while versions are removed.
static LIFECYCLE: Mutex<()> = Mutex::new(());

/// Bytes this process gave back (gc and the disk-pressure valve).
static RECLAIMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes this process gave back so far.
pub fn reclaimed_total() -> u64 {
    RECLAIMED.load(std::sync::atomic::Ordering::Relaxed)
}

fn execute(layout: &Layout, actions: &[Action], dropped: &[&Version]) -> u64 {
    let freed = remove::execute(layout, actions, dropped);
    RECLAIMED.fetch_add(freed, std::sync::atomic::Ordering::Relaxed);
    freed
}

fn hold() -> std::sync::MutexGuard<'static, ()> {
    LIFECYCLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a model could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A blob checked before was removed since (a gc of an older plan): fetch it again.
    #[error("{0} was removed before the model was published; it is fetched again")]
    Removed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Publishes `item` (`publish::link`), whose blobs are verified and in place, and records the
/// version, which becomes its model's newest.
pub fn publish(layout: &Layout, item: &Item, commit: Option<&str>) -> Result<(), PublishError> {
    let _held = hold();
    for file in &item.files {
        if publish::verified(layout, &layout.blob(item, file), file.sha256.as_str()).is_none() {
            return Err(PublishError::Removed(file.name.clone()));
        }
    }
    let id = item.id.as_str();
    let was = Layout::linked_tree_key(&layout.model_link(item), id);
    publish::link(layout, item, commit)?;
    let key = layout.tree_key(item);
    let old = Version::read(&layout.version_record(id, &key));
    if was.as_deref() == Some(key.as_str()) && old.as_ref().is_some_and(|o| o.commit.as_deref() == commit) {
        return Ok(());
    }
    let seq = record::next_seq(layout, id);
    let version = Version::of(layout, item, commit, seq);
    let version = match &old {
        Some(old) => version.merged_with(old),
        None => version,
    };
    version.write(layout)?;
    Ok(())
}

/// Records `item`, published already (by an earlier release, or before a crash), unless its
/// record is there.
pub fn ensure_recorded(layout: &Layout, item: &Item, commit: Option<&str>) -> std::io::Result<()> {
    let _held = hold();
    let key = layout.tree_key(item);
    if Version::read(&layout.version_record(item.id.as_str(), &key)).is_some() {
        return Ok(());
    }
    Version::of(layout, item, commit, record::next_seq(layout, item.id.as_str())).write(layout)
}

/// What a gc did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub actions: Vec<Action>,
    /// Bytes given back.
    pub freed: u64,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Removes what is neither deployed (`items`) nor among the `keep_previous` newest other
/// versions of each model; with `dry_run`, only says what.
pub fn gc(layout: &Layout, items: &[Item], keep_previous: usize, dry_run: bool) -> Report {
    let _held = hold();
    let records = record::all(layout);
    let deployed = protection(layout, items);
    let dropped = choose::dropped(&records, &deployed, keep_previous);
    let drop_set: HashSet<usize> = dropped.iter().copied().collect();
    let kept = records.iter().enumerate().filter(|(i, _)| !drop_set.contains(i)).map(|(_, v)| v);
    let needed = needed(layout, items, &deployed, kept);
    let chakras: HashMap<String, String> =
        items.iter().map(|i| (i.id.to_string(), i.chakra.clone())).collect();
    let recorded: HashSet<(String, String)> = records.iter().map(|v| (v.id.clone(), v.key.clone())).collect();
    let is_protected = |id: &str, key: &str| deployed.get(id).is_some_and(|p| p.covers(key));
    let mut actions = remove::unrecorded(layout, &chakras, &recorded, &is_protected);
    let dropped: Vec<&Version> = dropped.iter().map(|&i| &records[i]).collect();
    actions.extend(remove::versions(layout, &dropped, &needed));
    let freed =
        if dry_run { actions.iter().map(|a| a.bytes).sum() } else { execute(layout, &actions, &dropped) };
    Report { actions, freed }
}

/// The disk-pressure valve: gives back kept versions (oldest first; never a protected one,
/// never a blob anything kept needs) until the file system of `dir` has `need` bytes free, or
/// nothing more can go. Returns the bytes given back.
pub fn make_room(layout: &Layout, items: &[Item], dir: &Path, need: u64) -> u64 {
    let _held = hold();
    let free = || fs4::available_space(dir).unwrap_or(u64::MAX);
    let device = std::fs::metadata(dir).map(|m| std::os::unix::fs::MetadataExt::dev(&m)).ok();
    let records = record::all(layout);
    let deployed = protection(layout, items);
    let mut gone: HashSet<usize> = HashSet::new();
    let mut freed = 0;
    for candidate in choose::spare(&records, &deployed) {
        let have = free();
        if have >= need {
            break;
        }
        let others = records.iter().enumerate().filter(|(i, _)| *i != candidate && !gone.contains(i));
        let needed = needed(layout, items, &deployed, others.map(|(_, v)| v));
        let version = &records[candidate];
        let actions = remove::versions(layout, &[version], &needed);
        let on_device = |a: &Action| {
            a.what == What::Blob
                && a.bytes > 0
                && std::fs::metadata(&a.path).ok().map(|m| std::os::unix::fs::MetadataExt::dev(&m)) == device
        };
        if !actions.iter().any(on_device) {
            continue;
        }
        let bytes = execute(layout, &actions, &[version]);
        gone.insert(candidate);
        freed += bytes;
        tracing::warn!(model_id = %version.id, version = %version.version, bytes, free = have, need,
            "low on space: removed the kept previous version {} of {} ({bytes} bytes) to make room",
            version.version, version.id);
    }
    freed
}

/// Each deployed model's protected versions: the one its index entry wants and the one its
/// link points at.
fn protection(layout: &Layout, items: &[Item]) -> HashMap<String, Protected> {
    items
        .iter()
        .map(|item| {
            let current = Layout::linked_tree_key(&layout.model_link(item), item.id.as_str());
            (item.id.to_string(), Protected { wanted: layout.tree_key(item), current })
        })
        .collect()
}

/// What the deployed models (`items`, protected as `deployed` says) and the kept versions need.
fn needed<'a>(
    layout: &Layout,
    items: &[Item],
    deployed: &HashMap<String, Protected>,
    kept: impl Iterator<Item = &'a Version>,
) -> Needed {
    let mut needed = Needed::default();
    for version in kept {
        needed.add_version(version);
    }
    for item in items {
        for file in &item.files {
            needed.blobs.insert(layout.blob(item, file));
            needed.shas.insert(file.sha256.to_string());
        }
        if let Some(protected) = deployed.get(item.id.as_str()) {
            let id = item.id.to_string();
            needed.trees.insert((id.clone(), protected.wanted.clone()));
            needed.trees.extend(protected.current.clone().map(|current| (id, current)));
        }
        if let (Some(hub), Some(commit)) = (item.hub(), &item.commit) {
            needed.snapshots.extend(item.files.iter().map(|f| layout.snapshot(hub, commit, f)));
            if let Some(reference) = layout.reference(item) {
                needed.refs.insert((reference, commit.clone()));
            }
        }
    }
    needed
}

/// Every version on record that is not its model's published one, by model id, oldest first:
/// a deployed model's previous versions, and the kept versions of models no longer deployed.
pub fn previous(layout: &Layout, items: &[Item]) -> HashMap<String, Vec<Version>> {
    let deployed = protection(layout, items);
    let mut by_id: HashMap<String, Vec<Version>> = HashMap::new();
    for version in record::all(layout) {
        let current = deployed.get(&version.id).and_then(|p| p.current.as_deref());
        if current != Some(version.key.as_str()) {
            by_id.entry(version.id.clone()).or_default().push(version);
        }
    }
    by_id
}

/// The bytes the cache holds: every regular file in the Hub cache and the state folder's
/// blobs, each counted once however many hard links it has.
pub fn cache_bytes(layout: &Layout) -> u64 {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0;
    for root in [layout.cache_dir().to_owned(), layout.state_dir().join("blobs")] {
        for entry in walkdir::WalkDir::new(root).follow_links(false).into_iter().filter_map(Result::ok) {
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            use std::os::unix::fs::MetadataExt;
            if seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}
