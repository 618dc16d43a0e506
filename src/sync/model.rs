//! One model, every file of it, as one unit: what is on disk first (no network when every
//! file is verified and every link in place), then each missing file reused from the disk or
//! fetched, in parallel (`max_parallel_files`, smallest first, so small files do not wait
//! behind shards), each verified by its own hasher and installed as its blob; and only when
//! every file is in place, the links that make the model visible (`publish::link`). One file
//! failing fails the model: nothing of the new set is linked, and the version published
//! before stays complete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::StreamExt;

use super::{Engine, FetchedFrom, Outcome, SPACE_MARGIN};
use crate::digest::hash_reader;
use crate::fetch::error::Cause;
use crate::fetch::slot::ModelSlot;
use crate::fetch::{self, FetchError, Kind, Origin, Symptom};
use crate::index::Source;
use crate::item::{Item, ItemFile};
use crate::layout::Layout;
use crate::lifecycle::{self, PublishError};
use crate::publish::{self, FileState, State};
use crate::verify::Expected;

/// How one file came to be in place.
enum Got {
    /// Verified before, or re-hashed or linked from another verified blob now: no transfer.
    OnDisk,
    /// Fetched now.
    Fetched { origin: String, transferred: u64, commit: Option<String> },
}

/// Why one file is not in place.
struct FileFailure {
    kind: Kind,
    symptom: Symptom,
    reason: String,
}

/// Brings one model to published: from disk when it is there and intact, else its missing
/// files fetched, then the whole set published.
pub(super) async fn bring(engine: &Engine, item: &Item) -> Outcome {
    let started = Instant::now();
    let (layout, copy) = (engine.layout.clone(), item.clone());
    let on_disk = tokio::task::spawn_blocking(move || publish::state(&layout, &copy)).await;
    match on_disk {
        Ok(State::Published) => {
            record_published(engine, item).await;
            return Outcome::Published { fetched: None };
        }
        Ok(State::NeedsLinks { commit }) => {
            return match link(engine, item, commit).await {
                Ok(()) => Outcome::Published { fetched: None },
                Err(failed) => failed,
            };
        }
        Ok(State::Incomplete) => {}
        Err(e) => return local(format!("cannot look at the disk: {e}"), Symptom::DiskError),
    }
    if let Err(e) = publish::prepare_item(&engine.layout, item) {
        return local(format!("cannot create the cache folder: {e}"), Symptom::of_io(&e));
    }
    let slot = ModelSlot::default();
    let positions: Vec<AtomicU64> = item.files.iter().map(|_| AtomicU64::new(0)).collect();
    let (done, started_reported, stop) =
        (AtomicUsize::new(0), AtomicBool::new(false), AtomicBool::new(false));
    let report = |position: &AtomicU64, at: u64| {
        position.store(at, Ordering::Relaxed);
        let sum = positions.iter().map(|p| p.load(Ordering::Relaxed)).sum();
        engine.reporter.progress(item, sum);
    };
    // Smallest first: config files and the tokenizer are in place before the shards end.
    let mut order: Vec<usize> = (0..item.files.len()).collect();
    order.sort_by_key(|&i| (item.files[i].size_bytes, i));
    let results: Vec<(usize, Option<Result<Got, FileFailure>>)> = futures_util::stream::iter(order)
        .map(|i| {
            let file = &item.files[i];
            let (position, slot) = (&positions[i], &slot);
            let (done, started_reported, stop) = (&done, &started_reported, &stop);
            async move {
                if stop.load(Ordering::Relaxed) {
                    // Another file failed for good: the model fails whatever this one does.
                    return (i, None);
                }
                let progress = |at| report(position, at);
                let got = bring_file(engine, item, file, slot, &progress, started_reported).await;
                match &got {
                    Ok(_) => {
                        report(position, file.size_bytes);
                        engine.reporter.files_done(item, done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                    Err(failure) if failure.kind != Kind::Transient => stop.store(true, Ordering::Relaxed),
                    Err(_) => {}
                }
                (i, Some(got))
            }
        })
        .buffer_unordered(engine.max_parallel_files.max(1))
        .collect()
        .await;

    let mut failures: Vec<(&ItemFile, FileFailure)> = Vec::new();
    let (mut origins, mut transferred, mut commit) = (Vec::new(), 0, item.commit.clone());
    for (i, result) in results {
        match result {
            Some(Ok(Got::Fetched { origin, transferred: n, commit: resolved })) => {
                transferred += n;
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
                if commit.is_none() {
                    commit = resolved;
                }
            }
            Some(Ok(Got::OnDisk)) | None => {}
            Some(Err(failure)) => failures.push((&item.files[i], failure)),
        }
    }
    if !failures.is_empty() {
        return failed(item, failures);
    }
    if done.load(Ordering::Relaxed) < item.files.len() {
        // Not reached: every file either failed or is in place; kept as a guard.
        return local("some files were not fetched".to_owned(), Symptom::Refused);
    }
    let commit = commit.or_else(|| known_commit(&engine.layout, item));
    if let Err(failed) = link(engine, item, commit).await {
        return failed;
    }
    if origins.is_empty() {
        return Outcome::Published { fetched: None };
    }
    Outcome::Published {
        fetched: Some(FetchedFrom { origin: origins.join(", "), transferred, elapsed: started.elapsed() }),
    }
}

/// Brings one file to its verified blob: on disk already, re-hashed, linked from another
/// verified blob of the same sha256, or fetched from its origins in order.
async fn bring_file(
    engine: &Engine,
    item: &Item,
    file: &ItemFile,
    slot: &ModelSlot,
    progress: &(dyn Fn(u64) + Sync),
    started_reported: &AtomicBool,
) -> Result<Got, FileFailure> {
    // One writer per sha256: two models may name the same file (the same partial file), or
    // the same bytes in two repositories; the second waits, then links the first one's blob
    // (one inode, so one stamp holds for both) instead of downloading it again.
    let blob_lock =
        engine.blobs.lock().expect("blobs lock").entry(file.sha256.to_string()).or_default().clone();
    let _blob = blob_lock.lock().await;
    let reused = {
        let (layout, item, file, verify) =
            (engine.layout.clone(), item.clone(), file.clone(), engine.verify_existing);
        tokio::task::spawn_blocking(move || {
            let repos = hub_repos(layout.cache_dir());
            reuse(&layout, &item, &file, &repos, verify)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let copy_from = match reused {
        Ok(Reuse::InPlace) => return Ok(Got::OnDisk),
        Ok(Reuse::CopyFrom(dir)) => Some(dir),
        Ok(Reuse::Nothing) => None,
        Err(reason) => return Err(local_failure(format!("{}: {reason}", file.name), Symptom::DiskError)),
    };
    let partial = engine.layout.partial(item, file);
    if let Err(e) = room_for(engine, &partial, file.size_bytes).await {
        return Err(FileFailure { kind: e.kind(), symptom: e.symptom(), reason: e.to_string() });
    }
    if !started_reported.swap(true, Ordering::Relaxed) {
        engine.reporter.started(item);
    }
    let expected =
        Expected { sha256: file.sha256.clone(), size: file.size_bytes, git_oid: file.git_oid.clone() };
    let mut failures: Vec<(String, FetchError)> = Vec::new();
    // A verified copy on another device comes first: it is read like a `file://` mirror,
    // through the same verifying pipeline.
    let origins = copy_from.map(|dir| Origin::Mirror(format!("file://{}", dir.display())));
    for origin in origins.into_iter().chain(origins_of(engine, item, file)) {
        tracing::debug!(source = %origin.describe(), file = %file.path, "fetching");
        match fetch::fetch(&engine.http, &engine.policy, &origin, &partial, &expected, progress, slot).await {
            Ok(fetched) => {
                let commit = fetched.commit.clone().or_else(|| item.commit.clone());
                let installed = {
                    let (layout, item, file, commit) =
                        (engine.layout.clone(), item.clone(), file.clone(), commit.clone());
                    tokio::task::spawn_blocking(move || {
                        publish::install_blob(&layout, &item, &file, commit.as_deref())
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                };
                return match installed {
                    Ok(()) => Ok(Got::Fetched {
                        // One URL for a single file, as before; the repository for a set.
                        origin: if item.files.len() > 1 { label(&origin) } else { origin.describe() },
                        transferred: fetched.transferred,
                        commit: fetched.commit,
                    }),
                    Err(e) => {
                        Err(local_failure(format!("cannot publish {}: {e}", file.name), Symptom::of_io(&e)))
                    }
                };
            }
            Err(error) => {
                let lied = if error.kind() == Kind::Integrity {
                    "this source served wrong bytes (not published): "
                } else {
                    ""
                };
                tracing::warn!(source = %origin.describe(), file = %file.path, error_kind = error.kind_name(), "{lied}{error}");
                let local = error.kind() == Kind::Local;
                failures.push((origin.describe(), error));
                if local {
                    break;
                }
            }
        }
    }
    Err(file_failed(failures))
}

/// The origins of `file`, in order: the model's own source, then the mirrors (or the
/// mirrors first). A plain URL is the primary file's only: the other files of such a model
/// come from the mirrors.
fn origins_of(engine: &Engine, item: &Item, file: &ItemFile) -> Vec<Origin> {
    let own = match &item.source {
        Source::Hub(_) => item.hub_file(file).map(Origin::Hub),
        Source::Url(url) => (file == item.primary()).then(|| Origin::Url(url.clone())),
    };
    let mirrors = engine.mirrors.iter().cloned().map(Origin::Mirror);
    if engine.mirrors_first { mirrors.chain(own).collect() } else { own.into_iter().chain(mirrors).collect() }
}

/// An origin as the outcome names it: a Hub repository at its revision (not each file's URL),
/// or the origin itself.
fn label(origin: &Origin) -> String {
    match origin {
        Origin::Hub(hub) => {
            format!("hub {}/{} @ {}", crate::secret::redact(&hub.endpoint), hub.repo, hub.revision)
        }
        other => other.describe(),
    }
}

/// What the disk offers for one file.
enum Reuse {
    /// The blob is verified and in place (now).
    InPlace,
    /// A verified blob of the same sha256 is in this folder, on another device.
    CopyFrom(PathBuf),
    Nothing,
}

/// Uses what is on disk when it is the verified file, with no network request: the blob
/// itself (verified, or re-hashed), else a verified blob of the same sha256 elsewhere in the
/// cache or the state folder (another repository, another model's earlier version, another
/// tool's download), hard-linked in.
fn reuse(
    layout: &Layout,
    item: &Item,
    file: &ItemFile,
    repos: &[PathBuf],
    verify: bool,
) -> Result<Reuse, String> {
    let blob = layout.blob(item, file);
    match publish::file_state(layout, item, file) {
        FileState::Verified { .. } => return Ok(Reuse::InPlace),
        FileState::Unverified => {
            // A file this program did not verify (another tool's download, or changed since):
            // keep it only when it is the indexed file.
            if on_disk_is_indexed(&blob, file, verify)? {
                let commit = item.commit.clone().or_else(|| known_commit(layout, item));
                publish::restamp(layout, item, file, commit.as_deref())
                    .map_err(|e| format!("cannot stamp: {e}"))?;
                return Ok(Reuse::InPlace);
            }
        }
        FileState::Missing => {}
    }
    let sha256 = file.sha256.as_str();
    for candidate in layout.blob_elsewhere(repos, sha256) {
        if candidate == blob || !std::fs::symlink_metadata(&candidate).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let stamped = publish::verified(layout, &candidate, sha256).is_some();
        // Unstamped, it is hashed first (never trusted by its size alone).
        let usable = stamped || (verify && on_disk_is_indexed(&candidate, file, true)?);
        if !usable {
            continue;
        }
        let partial = layout.partial(item, file);
        let _ = std::fs::remove_file(&partial);
        match std::fs::hard_link(&candidate, &partial) {
            Ok(()) => {
                crate::fsx::rename_into_place(&partial, &blob).map_err(|e| format!("cannot link: {e}"))?;
                if !stamped {
                    let commit = item.commit.clone().or_else(|| known_commit(layout, item));
                    publish::restamp(layout, item, file, commit.as_deref())
                        .map_err(|e| format!("cannot stamp: {e}"))?;
                }
                tracing::info!(file = %file.path, from = %candidate.display(), "reused a verified copy");
                return Ok(Reuse::InPlace);
            }
            Err(e) => {
                tracing::debug!(from = %candidate.display(), "cannot hard-link ({e}); copying instead");
                return Ok(Reuse::CopyFrom(candidate.parent().unwrap_or(Path::new("/")).to_owned()));
            }
        }
    }
    Ok(Reuse::Nothing)
}

/// The Hub repositories' folders in the cache (`models--*`).
fn hub_repos(cache: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| Layout::is_hub_repo_name(&e.file_name().to_string_lossy()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Makes the model visible: every link, in the order `publish::link` gives, and its version
/// recorded (`lifecycle::publish`).
async fn link(engine: &Engine, item: &Item, commit: Option<String>) -> Result<(), Outcome> {
    let (layout, item) = (engine.layout.clone(), item.clone());
    let linked = tokio::task::spawn_blocking(move || lifecycle::publish(&layout, &item, commit.as_deref()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e).into()));
    linked.map_err(|e| match e {
        PublishError::Removed(_) => {
            Outcome::Failed { kind: Kind::Transient, reason: e.to_string(), symptom: Symptom::Refused }
        }
        PublishError::Io(e) => local(format!("cannot link: {e}"), Symptom::of_io(&e)),
    })
}

/// Records a model found published (by an earlier release, or before a crash) that has no
/// version record yet, so its files can be given back once it is replaced.
async fn record_published(engine: &Engine, item: &Item) {
    let (layout, item) = (engine.layout.clone(), item.clone());
    let _ = tokio::task::spawn_blocking(move || {
        let commit = known_commit(&layout, &item);
        if let Err(e) = lifecycle::ensure_recorded(&layout, &item, commit.as_deref()) {
            tracing::warn!(model_id = %item.id, "cannot record the published version: {e}");
        }
    })
    .await;
}

/// Whether the unstamped file at `path` is `file`: hashed, or with `verify_checksums = false`
/// trusted by its size.
fn on_disk_is_indexed(path: &Path, file: &ItemFile, verify: bool) -> Result<bool, String> {
    if !verify {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if size == file.size_bytes {
            tracing::warn!(blob = %path.display(),
                "verify_checksums = false: trusting the file on disk by its size, without hashing it");
        }
        return Ok(size == file.size_bytes);
    }
    let opened = crate::fsx::open_regular(path).map_err(|e| e.to_string())?;
    let (sha256, size) = hash_reader(opened).map_err(|e| e.to_string())?;
    if sha256 != file.sha256 || size != file.size_bytes {
        tracing::warn!(blob = %path.display(), %sha256,
            "the file at the blob's name is not the indexed one; fetching it again");
        return Ok(false);
    }
    Ok(true)
}

/// The commit the model's revision points at, as far as the disk knows (no network): the
/// pinned one, else the primary file's stamp, else the ref.
fn known_commit(layout: &Layout, item: &Item) -> Option<String> {
    if let Some(commit) = &item.commit {
        return Some(commit.clone());
    }
    item.hub()?;
    let primary = item.primary();
    let stamped = publish::verified(layout, &layout.blob(item, primary), primary.sha256.as_str())
        .and_then(|s| s.commit);
    stamped.or_else(|| {
        let reference = layout.reference(item)?;
        crate::fsx::read_bounded_string(&reference, crate::fsx::REF)
            .ok()
            .filter(|c| crate::item::is_commit(c))
    })
}

fn local(reason: String, symptom: Symptom) -> Outcome {
    Outcome::Failed { kind: Kind::Local, reason, symptom }
}

fn local_failure(reason: String, symptom: Symptom) -> FileFailure {
    FileFailure { kind: Kind::Local, symptom, reason }
}

fn gravity(kind: Kind) -> u8 {
    match kind {
        Kind::Transient => 0,
        Kind::Permanent => 1,
        Kind::Integrity => 2,
        Kind::Local => 3,
    }
}

/// Every origin of one file failed: the failure names each one's reason; the kind is the
/// gravest.
fn file_failed(failures: Vec<(String, FetchError)>) -> FileFailure {
    let gravest = failures.iter().map(|(_, e)| e).max_by_key(|e| gravity(e.kind()));
    let (kind, symptom) = gravest.map_or((Kind::Permanent, Symptom::Refused), |e| (e.kind(), e.symptom()));
    let reason = match failures.as_slice() {
        [(_, only)] => only.to_string(),
        many => many.iter().map(|(origin, e)| format!("{origin}: {e}")).collect::<Vec<_>>().join("; "),
    };
    FileFailure { kind, symptom, reason }
}

/// Some files failed: the model fails, naming each file (for a model of several files) and
/// why; the kind and the symptom are the gravest.
fn failed(item: &Item, mut failures: Vec<(&ItemFile, FileFailure)>) -> Outcome {
    failures.sort_by_key(|(file, f)| (std::cmp::Reverse(gravity(f.kind)), file.path.clone()));
    let (kind, symptom) = (failures[0].1.kind, failures[0].1.symptom);
    let reason = if item.files.len() == 1 {
        failures.remove(0).1.reason
    } else {
        let of = item.files.len();
        let each: Vec<String> =
            failures.iter().map(|(file, f)| format!("{}: {}", file.path, f.reason)).collect();
        format!(
            "{} of {of} files failed, so nothing of this version is published: {}",
            each.len(),
            each.join("; ")
        )
    };
    Outcome::Failed { kind, reason, symptom }
}

/// Refuses to start a download the disk cannot hold, after giving back kept previous
/// versions to make room (`lifecycle::make_room`, unless `prune = false`).
async fn room_for(engine: &Engine, partial: &Path, size: u64) -> Result<(), FetchError> {
    match enough_space(partial, size) {
        Err(e) if engine.prune && matches!(*e.cause, Cause::NoSpace { .. }) => {
            let Cause::NoSpace { need, .. } = *e.cause else { return Err(e) };
            let (layout, deployed) = (engine.layout.clone(), engine.deployed.clone());
            let dir = partial.parent().unwrap_or(Path::new(".")).to_owned();
            let freed =
                tokio::task::spawn_blocking(move || lifecycle::make_room(&layout, &deployed, &dir, need))
                    .await;
            if freed.unwrap_or(0) == 0 {
                return Err(e);
            }
            enough_space(partial, size)
        }
        other => other,
    }
}

/// Refuses to start a download the disk cannot hold (the partial's bytes already count).
fn enough_space(partial: &Path, size: u64) -> Result<(), FetchError> {
    let dir = partial.parent().unwrap_or(Path::new("."));
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(FetchError::io(format!("cannot create {}", dir.display()), e));
    }
    let have = crate::fsx::regular_len(partial);
    let need = size.saturating_sub(have) + SPACE_MARGIN;
    match fs4::available_space(dir) {
        Ok(free) if free < need => Err(Cause::NoSpace { dir: dir.display().to_string(), free, need }.into()),
        _ => Ok(()),
    }
}
