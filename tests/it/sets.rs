//! A model is a set of files: a Hub repository at one commit (LFS shards redirected to the CDN,
//! small files kept in git with a git-sha1 `ETag`, nested folders, unusual names) fetched,
//! verified and published as one unit. The Hub layout (`snapshots/{commit}/{path}`, `refs/main`
//! written last) and the store's folder (`{store_dir}/{id}` a link to a tree of every file) are
//! checked; so are the failures that must publish nothing of the new set (a corrupt shard, a
//! file the Hub does not have, a `gitOid` the Hub contradicts), kills in the middle, an update
//! under a reader that must never see a mix, a set from a mirror, a model pinned by its
//! commit, reuse of a file another repository has, and the migration of an install of the
//! layout before trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::index::{document, set_entry};
use crate::fixture::{AJNA, Planned, Repo, Site, canonical, data, sha256_hex, walk};
use crate::origin::{Commit, Fault, Route, Rule};

const ID: &str = "sahasrara-crown-set";
const CHAKRA: &str = "sahasrara";
const REPO: &str = "test-org/crown-set";
const SHARDS: [&str; 3] = [
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
];
/// Names the Hub URL-encodes, in folders: one kept in git, one in LFS.
const ODD_GIT: &str = "extras/name with spaces+plus=ünïcødé.txt";
const ODD_LFS: &str = "extras/deep/wéights +1.bin";

/// Version `seed` of the sharded model: three LFS shards, their index, small git files, a
/// nested `1_Pooling/config.json` and two oddly named files.
fn sharded(seed: u64) -> Repo {
    let mut repo = Repo::new()
        .with_gitattributes()
        .file("config.json", format!("{{\"model_type\": \"bert\", \"version\": {seed}}}\n"))
        .file("tokenizer.json", format!("{{\"version\": \"1.0\", \"seed\": {seed}}}\n"))
        .file("1_Pooling/config.json", format!("{{\"word_embedding_dimension\": {seed}}}\n"))
        .git(ODD_GIT, format!("odd {seed}\n"))
        .lfs(ODD_LFS, data(seed * 100 + 9, 3000));
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in SHARDS.iter().enumerate() {
        repo = repo.lfs(shard, data(seed * 100 + i as u64, (200 << 10) + i * 1000));
        weight_map.insert(format!("layer.{i}"), (*shard).into());
    }
    let index = serde_json::json!({ "metadata": { "total_size": 1 }, "weight_map": weight_map });
    repo.file("model.safetensors.index.json", index.to_string())
}

/// The set entry of `commit`, its primary file the first shard.
fn entry(commit: &Commit) -> Value {
    set_entry(ID, CHAKRA, commit, SHARDS[0])
}

/// Publishes `repo` as a commit and writes an index of the set pinned to it.
fn serve(site: &Site, repo: &Repo) -> Commit {
    let commit = site.origin().publish_repo(REPO, repo);
    site.write_entries(vec![entry(&commit)]);
    commit
}

fn read_link(path: &Path) -> PathBuf {
    std::fs::read_link(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `commit` is the published version of the planned model: every file in the Hub layout
/// (relative snapshot links into `blobs/`, `refs/main` the commit) and in the store's folder
/// (`{store_dir}/{id}` a link to its tree; every file under its path, also through by-chakra).
fn assert_set_published(site: &Site, planned: &Planned, commit: &Commit) {
    assert_eq!(planned.files.len(), commit.files.len(), "the plan lists every file");
    for file in &commit.files {
        let f = planned.file(&file.path);
        assert_eq!(sha256_hex(&read(&f.blob)), file.blob.sha256, "{}", f.blob.display());
        let snapshot = planned.snapshot(&commit.id, &file.path);
        assert_eq!(f.snapshot.as_deref(), Some(snapshot.as_path()), "the plan names the snapshot link");
        let target = read_link(&snapshot);
        assert!(target.is_relative(), "{} -> {} is absolute", snapshot.display(), target.display());
        let depth = file.path.matches('/').count();
        assert_eq!(target, PathBuf::from(format!("{}blobs/{}", "../".repeat(2 + depth), file.blob.sha256)));
        assert_eq!(canonical(&snapshot), canonical(&f.blob), "{}", snapshot.display());
        assert_eq!(read(&f.store), *file.blob.content, "{}", f.store.display());
        assert_eq!(f.store, planned.model_path.join(&file.path));
        let by_chakra = planned.by_chakra().join(&file.path);
        assert_eq!(read(&by_chakra), *file.blob.content, "{}", by_chakra.display());
        assert!(read_link(&planned.tree.join(&file.path)).is_relative(), "a tree link is absolute");
    }
    assert_eq!(std::fs::read_to_string(planned.reference("main")).expect("refs/main"), commit.id);
    let link = read_link(&planned.model_path);
    assert!(
        link.starts_with(".models-fetch/trees"),
        "{} -> {}",
        planned.model_path.display(),
        link.display()
    );
    assert_eq!(canonical(&planned.model_path), canonical(&planned.tree));
    assert!(site.temp_files().is_empty(), "temp files left: {:#?}", site.temp_files());
}

/// Every blob in the cache holds the bytes its name says (or is being written under another
/// name): no kill or failure ever puts wrong bytes at a blob's name.
fn assert_blobs_hold_their_names(site: &Site) {
    for path in walk(&site.cache()).into_iter().chain(walk(&site.store())) {
        if crate::fixture::plan::is_blob(&path) {
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            assert_eq!(sha256_hex(&read(&path)), name, "{} holds other bytes", path.display());
        }
    }
}

/// Which of `versions` the model's folder at `folder` holds, reading every file of the set
/// through it; an error when a file is missing or of another version (a mix).
fn version_in(folder: &Path, versions: &[&Commit]) -> Result<usize, String> {
    // The versions every file read so far is of (a file the same in several is of each).
    let mut possible: Vec<usize> = (0..versions.len()).collect();
    for file in &versions[0].files {
        let bytes = std::fs::read(folder.join(&file.path)).map_err(|e| format!("{}: {e}", file.path))?;
        let of: Vec<usize> =
            (0..versions.len()).filter(|&v| *versions[v].file(&file.path).blob.content == bytes).collect();
        if of.is_empty() {
            return Err(format!("{} holds bytes of no version", file.path));
        }
        possible.retain(|v| of.contains(v));
        if possible.is_empty() {
            return Err(format!("a mix: {} is of version {of:?}, the files before of others", file.path));
        }
    }
    Ok(possible[0])
}

#[test]
fn a_sharded_model_is_published_as_one_folder_and_one_snapshot_and_then_fetches_nothing() {
    let site = Site::new();
    site.set("max_parallel_files", 3);
    let v1 = serve(&site, &sharded(1));
    let run = site.sync();
    run.assert_ok();
    let planned = site.planned(ID);
    assert_eq!(planned.commit.as_deref(), Some(v1.id.as_str()));
    assert_set_published(&site, &planned, &v1);
    // Small files answered by the Hub itself, from the pinned commit; shards from the CDN.
    let gets = site.origin().requests_to(Route::HubGet);
    assert!(gets.iter().all(|r| r.path().contains(&format!("/resolve/{}/", v1.id))), "{gets:#?}");
    assert!(gets.iter().any(|r| r.path().ends_with("1_Pooling/config.json")), "{gets:#?}");
    let status = site.status();
    let model = &status["models"][0];
    assert_eq!(
        (model["files"].as_u64(), model["files_done"].as_u64()),
        (Some(v1.files.len() as u64), Some(v1.files.len() as u64)),
        "{status:#}"
    );
    assert_eq!(model["state"], "ready", "{status:#}");

    let before = site.origin().requests().len();
    let run = site.sync();
    run.assert_ok();
    assert!(run.out.contains(&format!("{ID}: already published")), "{}", run.out);
    assert_eq!(site.origin().requests().len(), before, "a published set asked the network again");
}

#[test]
fn one_corrupt_shard_fails_the_model_naming_it_and_both_hashes_and_the_old_version_stays() {
    let site = Site::new();
    let v1 = serve(&site, &sharded(1));
    site.sync().assert_ok();
    let v2 = serve(&site, &sharded(2));
    let bad = v2.file(SHARDS[1]);
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(1000)).for_target(&bad.blob.sha256));
    let run = site.sync();
    assert_eq!(run.code, Some(65), "{}", run.out);
    assert!(run.out.contains(SHARDS[1]), "the error does not name the shard:\n{}", run.out);
    assert!(run.out.contains(&format!("expected sha256 {}, got ", bad.blob.sha256)), "{}", run.out);
    let planned = site.planned(ID);
    assert!(!planned.snapshot_dir(&v2.id).exists(), "a snapshot of the failed version was linked");
    assert_eq!(std::fs::read_to_string(planned.reference("main")).expect("refs/main"), v1.id);
    assert_eq!(version_in(&planned.model_path, &[&v1, &v2]), Ok(0), "the old version is not complete");
    assert_blobs_hold_their_names(&site);

    site.origin().heal();
    site.sync().assert_ok();
    assert_set_published(&site, &site.planned(ID), &v2);
}

#[test]
fn a_file_the_hub_does_not_have_fails_the_model_and_publishes_nothing_of_it() {
    let site = Site::new();
    let v1 = serve(&site, &sharded(1));
    site.sync().assert_ok();
    let v2 = site.origin().publish_repo(REPO, &sharded(2));
    let mut listed = entry(&v2);
    let ghost = b"a file the commit does not hold\n";
    listed["artifact"]["files"].as_array_mut().expect("files").push(serde_json::json!({
        "path": "generation_config.json", "sha256": sha256_hex(ghost), "sizeBytes": ghost.len()
    }));
    site.write_entries(vec![listed]);
    let run = site.sync();
    assert_ne!(run.code, Some(0), "{}", run.out);
    assert!(run.out.contains("generation_config.json") && run.out.contains("404"), "{}", run.out);
    let planned = site.planned(ID);
    assert!(!planned.snapshot_dir(&v2.id).exists(), "a snapshot of the failed version was linked");
    assert_eq!(version_in(&planned.model_path, &[&v1, &v2]), Ok(0), "the old version is not complete");
}

#[test]
fn a_git_oid_the_hub_contradicts_downloads_nothing_of_that_file_and_names_it() {
    let site = Site::new();
    let v1 = site.origin().publish_repo(REPO, &sharded(1));
    let mut listed = entry(&v1);
    let wrong = "ab".repeat(20);
    let files = listed["artifact"]["files"].as_array_mut().expect("files");
    let config = files.iter_mut().find(|f| f["path"] == "config.json").expect("config.json listed");
    config["gitOid"] = wrong.clone().into();
    site.write_entries(vec![listed]);
    let run = site.sync();
    assert_ne!(run.code, Some(0), "{}", run.out);
    let real = &v1.file("config.json").oid;
    assert!(run.out.contains("config.json"), "{}", run.out);
    assert!(run.out.contains(real) && run.out.contains(&wrong), "both sha1s are not named:\n{}", run.out);
    let config_path = format!("/resolve/{}/config.json", v1.id);
    let got_config =
        site.origin().requests_to(Route::HubGet).into_iter().any(|r| r.path().ends_with(&config_path));
    assert!(!got_config, "config.json was downloaded although the Hub contradicts its gitOid");
    let planned = site.planned(ID);
    assert!(std::fs::symlink_metadata(&planned.model_path).is_err(), "the model's folder was published");
    assert!(!planned.snapshot_dir(&v1.id).exists(), "a snapshot was linked");
}

#[test]
fn kills_at_random_moments_during_a_set_never_leave_a_mix_and_the_next_run_completes() {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            as u64;
    eprintln!("kill loop seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let site = Site::new();
    site.set("chunk_size", "64KiB");
    site.set("connections_per_file", 2);
    site.set("stall_timeout", "5s");
    site.origin()
        .add(Rule::always(Route::Cdn, Fault::Drip { chunk: 16 << 10, every: Duration::from_millis(10) }));
    let v1 = serve(&site, &sharded(1));
    let mut current = vec![v1.clone()];
    let started = Instant::now();
    for i in 0..12 {
        if started.elapsed() > Duration::from_secs(25) {
            break;
        }
        let life = Duration::from_millis(rng.u64(20..700));
        let t0 = Instant::now();
        let run = site.sync_killed_when(&|| t0.elapsed() > life);
        assert_blobs_hold_their_names(&site);
        let planned = site.planned(ID);
        if std::fs::symlink_metadata(&planned.model_path).is_ok() {
            let versions: Vec<&Commit> = current.iter().collect();
            version_in(&planned.model_path, &versions)
                .unwrap_or_else(|e| panic!("run {i}, killed after {life:?} (seed {seed}): {e}\n{}", run.out));
        }
        if run.code == Some(0) && current.len() == 1 {
            // Published: the next kills land on an update to version 2.
            let v2 = serve(&site, &sharded(2));
            current.push(v2);
        }
    }
    site.sync().assert_ok();
    let last = current.last().expect("a version");
    assert_set_published(&site, &site.planned(ID), last);
}

#[test]
fn an_update_under_a_reader_shows_it_the_old_set_or_the_new_one_never_a_mix() {
    let site = Site::new();
    let v1 = serve(&site, &sharded(1));
    site.sync().assert_ok();
    let folder = site.planned(ID).model_path;
    let v2 = site.origin().publish_repo(REPO, &sharded(2));
    site.origin()
        .add(Rule::always(Route::Cdn, Fault::Drip { chunk: 32 << 10, every: Duration::from_millis(5) }));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let reader = {
        let (stop, seen, folder) = (stop.clone(), seen.clone(), folder.clone());
        let (v1, v2) = (v1.clone(), v2.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                // A reader that wants one version resolves the folder once, then reads in it.
                let real =
                    std::fs::canonicalize(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
                let version = version_in(&real, &[&v1, &v2])?;
                seen[version].fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    site.write_entries(vec![entry(&v2)]);
    let run = site.sync();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let read = reader.join().expect("the reader panicked");
    run.assert_ok();
    read.unwrap_or_else(|e| panic!("the reader saw {e}"));
    let (old, new) = (seen[0].load(Ordering::Relaxed), seen[1].load(Ordering::Relaxed));
    assert!(old > 0 && new > 0, "the reader saw version 1 {old} times and version 2 {new} times");
    assert_set_published(&site, &site.planned(ID), &v2);
}

#[test]
fn models_pinned_by_their_commit_get_refs_main() {
    let site = Site::new();
    // A set gives only `commit`; a single-file entry a 40-hex `revision`.
    let set = serve(&site, &sharded(1));
    let single = site.serve(AJNA, data(5, 64 << 10));
    let mut pinned = document(&[(AJNA, &single)], "1.0.0")["models"][0].clone();
    pinned["artifact"]["revision"] = single.commit.clone().into();
    site.write_entries(vec![entry(&set), pinned]);
    site.sync().assert_ok();
    let (planned_set, planned_single) = (site.planned(ID), site.planned(AJNA.id));
    assert_eq!(std::fs::read_to_string(planned_set.reference("main")).expect("refs/main"), set.id);
    assert_eq!(std::fs::read_to_string(planned_single.reference("main")).expect("refs/main"), single.commit);
    let snapshot = planned_single.snapshot(&single.commit, AJNA.filename);
    assert_eq!(canonical(&snapshot), canonical(&planned_single.blob));
    assert_eq!(sha256_hex(&read(&planned_single.store)), single.sha256);
}

#[test]
fn a_set_from_a_mirror_gets_its_snapshot_at_its_commit() {
    let hub = Site::new();
    let commit = hub.origin().publish_repo(REPO, &sharded(3));
    let site = Site::offline();
    for file in &commit.files {
        site.write(&format!("mirror/{}", file.blob.sha256), &file.blob.content);
    }
    site.set("mirrors", vec!["file://mirror"]);
    site.set("mirrors_first", true);
    site.set("max_retries", 0);
    site.write_entries(vec![entry(&commit)]);
    site.sync().assert_ok();
    assert_set_published(&site, &site.planned(ID), &commit);
}

#[test]
fn a_file_another_repository_has_is_linked_not_downloaded() {
    let site = Site::new();
    let v1 = serve(&site, &sharded(1));
    site.sync().assert_ok();
    let shard = v1.file(SHARDS[2]).clone();
    let other = site.origin().publish_repo(
        "test-org/other",
        &Repo::new().lfs("weights.safetensors", (*shard.blob.content).clone()),
    );
    let second = set_entry("sahasrara-other-set", CHAKRA, &other, "weights.safetensors");
    site.write_entries(vec![entry(&v1), second]);
    let cdn_before = site.origin().requests_to(Route::Cdn).len();
    site.sync().assert_ok();
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), cdn_before, "the shard was downloaded again");
    let planned = site.planned("sahasrara-other-set");
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(&site.planned(ID).file(SHARDS[2]).blob).expect("blob").ino(),
        std::fs::metadata(&planned.file("weights.safetensors").blob).expect("blob").ino(),
    );
    assert_eq!(a, b, "not a hard link of the verified blob");
    assert_eq!(read(&planned.file("weights.safetensors").store), *shard.blob.content);
}

#[test]
fn an_install_of_the_layout_before_trees_is_migrated_in_place_without_a_download() {
    let site = Site::new();
    let blob = site.published(AJNA, data(7, 64 << 10));
    let planned = site.paths(AJNA, &blob);
    // The layout before trees: `{store_dir}/{id}` a real folder holding a `{filename}` link.
    std::fs::remove_file(&planned.model_path).expect("the model's link");
    std::fs::remove_dir_all(site.store().join(".models-fetch/trees")).expect("the trees");
    std::fs::create_dir(&planned.model_path).expect("the old folder");
    let rel = planned.blob.strip_prefix(site.dir()).expect("blob in the site");
    std::os::unix::fs::symlink(Path::new("../..").join(rel), planned.model_path.join(AJNA.filename))
        .expect("the old link");
    assert_eq!(sha256_hex(&read(&planned.store)), blob.sha256, "the old layout is readable");
    let before = site.origin().requests().len();
    site.sync().assert_ok();
    assert_eq!(site.origin().requests().len(), before, "the migration used the network");
    let link = read_link(&planned.model_path);
    assert!(link.starts_with(".models-fetch/trees"), "not migrated: {}", link.display());
    site.assert_published(AJNA, &blob);
    assert!(site.temp_files().is_empty(), "{:#?}", site.temp_files());
    // Single-file entries keep `{store_dir}/{id}/{filename}`.
    assert_eq!(planned.store, planned.model_path.join(AJNA.filename));
}

#[test]
fn the_shards_of_one_model_share_one_budget_of_connections_on_a_slow_cdn() {
    // Three shards of 16 chunks each on a CDN that drips 32 KiB per 20 ms per connection: alone,
    // each would ramp to `connections_per_file` (4) connections, 12 at once. One model's files
    // share those 4. The hub drips `config.json` too, so the first two shards (fetched beside
    // it) ramp to 2 connections each before the third starts: it waits until one of their
    // extra connections ends at its range boundary (not until their files are done), and never
    // holds a fifth.
    let site = Site::new();
    site.set("chunk_size", "256KiB");
    site.set("connections_per_file", 4);
    site.set("max_parallel_files", 3);
    let mut repo = Repo::new().file("config.json", "{\"model_type\": \"bert\"}\n");
    let mut blobs = Vec::new();
    for (i, shard) in SHARDS.iter().enumerate() {
        let bytes = data(700 + i as u64, 4 << 20);
        blobs.push(sha256_hex(&bytes));
        repo = repo.lfs(shard, bytes);
    }
    let commit = site.origin().publish_repo(REPO, &repo);
    site.write_entries(vec![entry(&commit)]);
    let drip = |chunk, ms| Fault::Drip { chunk, every: Duration::from_millis(ms) };
    site.origin().add(Rule::always(Route::Cdn, drip(32 * 1024, 20)));
    site.origin().add(Rule::always(Route::HubGet, drip(1, 15)).for_target("config.json"));
    site.sync().assert_ok();
    assert_set_published(&site, &site.planned(ID), &commit);
    let most = site.origin().most_at_once(crate::origin::Host::Cdn);
    assert!(most <= 4, "the model's shards held {most} connections to the CDN at once, more than its 4");
    assert!(most >= SHARDS.len(), "the shards were not fetched side by side ({most} at once)");
    // Request numbers of each shard's first and last range on the CDN.
    let requests = site.origin().requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == crate::origin::Host::Cdn).collect();
    let span = |blob: &String| {
        let of_blob = |r: &&crate::origin::Request| r.target.contains(blob.as_str());
        (cdn.iter().position(of_blob).expect("fetched"), cdn.iter().rposition(of_blob).expect("fetched"))
    };
    let mut spans: Vec<_> = blobs.iter().map(span).collect();
    spans.sort();
    let (late, earlier) = spans.split_last().expect("three shards");
    assert!(
        earlier.iter().all(|&(_, last)| late.0 < last),
        "the late shard started only once the others were done ({spans:?}): their extra connections were not given back"
    );
}
