//! Lifecycle: updates, removals and rollbacks give the disk back, and nothing foreign is
//! touched. A set (small git files and an LFS weight, `tokenizer.json` the same in every
//! version) is updated v1 -> v2 -> v3 with `keep_previous = 1`: v1's bytes go, v2 stays, v3 is
//! published; a rollback to v2 publishes from disk with no request; a model taken out of the
//! config loses its links at once and its files later; a blob two models share goes only with
//! the second; files other tools put in a shared cache or store are left alone; on a small
//! tmpfs the disk-pressure valve drops a kept version (never the published one) to make room;
//! `gc --dry-run` removes nothing; a `gc` killed (SIGKILL, by strace at its n-th unlink) leaves
//! every published model whole and the next `gc` finishes the job.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::fixture::index::set_entry;
use crate::fixture::tmpfs::Tmpfs;
use crate::fixture::{Planned, Repo, Site, data, sha256_hex, text, walk};
use crate::origin::Commit;

const REPO: &str = "test-org/lifecycle";
const ID: &str = "ajna-lifecycle";
const WEIGHTS: &str = "model.safetensors";

/// Version `seed` of the model: its config and weights change, its tokenizer never does.
fn version(seed: u64, weights: usize) -> Repo {
    Repo::new()
        .with_gitattributes()
        .git("config.json", format!("{{\"version\": {seed}}}\n"))
        .git("tokenizer.json", "{\"vocab\": {\"a\": 0}}\n")
        .lfs(WEIGHTS, data(seed, weights))
}

/// The set entry of `commit`, without the `.gitattributes`.
fn entry(id: &str, commit: &Commit) -> Value {
    let mut entry = set_entry(id, "ajna", commit, WEIGHTS);
    let files = entry["artifact"]["files"].as_array_mut().expect("files");
    files.retain(|f| f["path"] != ".gitattributes");
    entry
}

/// Publishes version `seed` on the Hub, indexes it (alone, or beside `others`) and syncs.
fn deploy(site: &Site, commit: &Commit, others: &[Value]) -> Planned {
    let mut entries = vec![entry(ID, commit)];
    entries.extend_from_slice(others);
    site.write_entries(entries);
    let run = site.sync();
    run.assert_ok();
    site.planned(ID)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Every file of `planned` is readable through its stable path with the bytes `commit` has.
fn assert_serves(planned: &Planned, commit: &Commit) {
    for f in &planned.files {
        let file = commit.file(&f.path);
        let bytes = std::fs::read(&f.store).unwrap_or_else(|e| panic!("{}: {e}", f.store.display()));
        assert_eq!(sha256_hex(&bytes), file.blob.sha256, "{} serves other bytes", f.store.display());
    }
}

/// Nothing of `planned` that `kept` does not share is on disk: blobs, snapshot folder, tree.
fn assert_gone(planned: &Planned, commit: &Commit, kept: &[&Planned]) {
    let still: BTreeSet<PathBuf> = kept.iter().flat_map(|p| p.files.iter().map(|f| f.blob.clone())).collect();
    for file in &planned.files {
        if !still.contains(&file.blob) {
            assert!(!exists(&file.blob), "{} ({}) is still there", file.blob.display(), file.path);
        }
    }
    let snapshot = planned.snapshot_dir(&commit.id);
    assert!(!exists(&snapshot), "{} is still there", snapshot.display());
    assert!(!exists(&planned.tree), "{} is still there", planned.tree.display());
}

/// Everything of `planned` is on disk: every blob and snapshot link, and its tree.
fn assert_on_disk(planned: &Planned) {
    for file in &planned.files {
        assert!(exists(&file.blob), "{} is gone", file.blob.display());
        let snapshot = file.snapshot.as_ref().expect("a pinned set has snapshot links");
        assert!(exists(snapshot), "{} is gone", snapshot.display());
    }
    assert!(exists(&planned.tree), "{} is gone", planned.tree.display());
}

fn previous_commits(status: &Value, id: &str) -> Vec<String> {
    let models = status["models"].as_array().expect("models");
    let model = models.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("{id} in {status:#}"));
    model["previous"]
        .as_array()
        .expect("previous")
        .iter()
        .map(|p| p["commit"].as_str().unwrap().to_owned())
        .collect()
}

/// The bytes the last line of `gc`'s output says were (or would be) freed.
fn freed(out: &str) -> u64 {
    let last = out.lines().last().unwrap_or_default();
    let bytes = last.split_once('(').and_then(|(_, rest)| rest.split_once(" bytes)")).map(|(n, _)| n);
    bytes.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no total in {out}"))
}

fn gc(site: &Site, dry_run: bool) -> String {
    let mut args = vec!["gc"];
    if dry_run {
        args.push("--dry-run");
    }
    let output = site.command(&args).output().expect("models-fetch gc runs");
    assert_eq!(output.status.code(), Some(0), "gc failed: {}", text(&output));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// v1 deployed, then v2: v1 is then the kept previous version (on disk, listed by status).
fn v1_then_v2(site: &Site) -> ((Commit, Planned), (Commit, Planned)) {
    let c1 = site.origin().publish_repo(REPO, &version(1, 300_000));
    let p1 = deploy(site, &c1, &[]);
    let c2 = site.origin().publish_repo(REPO, &version(2, 300_000));
    let p2 = deploy(site, &c2, &[]);
    assert_on_disk(&p1);
    assert_eq!(previous_commits(&site.status(), ID), [c1.id.as_str()]);
    ((c1, p1), (c2, p2))
}

#[test]
fn updates_keep_one_previous_version_and_a_rollback_to_it_needs_no_network() {
    let site = Site::new();
    site.set("keep_previous", 1);
    let ((c1, p1), (c2, p2)) = v1_then_v2(&site);
    let c3 = site.origin().publish_repo(REPO, &version(3, 300_000));
    let p3 = deploy(&site, &c3, &[]);

    assert_serves(&p3, &c3);
    assert_on_disk(&p2);
    assert_gone(&p1, &c1, &[&p2, &p3]);
    let tokenizer = p1.file("tokenizer.json").blob.clone();
    assert!(exists(&tokenizer), "the tokenizer every version shares was removed");
    assert_eq!(previous_commits(&site.status(), ID), [c2.id.as_str()]);
    site.assert_invariant("after v3");

    // Rollback: the index names v2 again; it is published from disk, not one request made.
    let before = site.origin().requests().len();
    let back = deploy(&site, &c2, &[]);
    assert_eq!(back.tree, p2.tree);
    assert_eq!(site.origin().requests().len(), before, "the rollback asked the network");
    assert_serves(&back, &c2);
    assert_eq!(std::fs::read_to_string(back.reference("main")).expect("refs/main"), c2.id);
    assert_on_disk(&p3);
    assert_eq!(previous_commits(&site.status(), ID), [c3.id.as_str()]);
    site.assert_invariant("after the rollback");
}

#[test]
fn a_removed_model_loses_its_links_at_once_and_its_files_on_gc_dry_run_removes_nothing() {
    const OTHER: &str = "ajna-other";
    let site = Site::new();
    let kept = site.origin().publish_repo(REPO, &version(1, 300_000));
    let gone_commit = site.origin().publish_repo("test-org/removed", &version(9, 200_000));
    deploy(&site, &kept, &[entry(OTHER, &gone_commit)]);
    let gone = site.planned(OTHER);
    assert_serves(&gone, &gone_commit);

    // Taken out of the config: its folder and chakra link go with the next sync.
    let p = deploy(&site, &kept, &[]);
    assert!(!exists(&gone.model_path), "{} still there", gone.model_path.display());
    assert!(!exists(&gone.by_chakra()), "{} still there", gone.by_chakra().display());
    // Its files are kept (keep_previous = 1, the default), and status says so.
    assert_on_disk(&gone);
    let status = site.status();
    let removed = status["removed"].as_array().expect("removed");
    assert_eq!(removed.len(), 1, "{status:#}");
    assert_eq!(removed[0]["id"], OTHER);
    assert_eq!(removed[0]["previous"][0]["commit"], gone_commit.id.as_str());

    // keep_previous = 0: a dry run lists every path and removes none of them.
    site.set("keep_previous", 0);
    site.write_config();
    let dry = gc(&site, true);
    let weights = gone.file(WEIGHTS).blob.clone();
    assert!(dry.contains(&weights.display().to_string()), "{dry}");
    assert!(dry.contains("would free"), "{dry}");
    assert!(freed(&dry) >= 200_000, "{dry}");
    assert_on_disk(&gone);
    // The real thing frees the same paths, and the repository's folder, now empty.
    let done = gc(&site, false);
    let listed = |out: &str| out.lines().filter(|l| l.contains('/')).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(listed(&done), listed(&dry), "gc did not do what --dry-run said");
    assert!(!exists(&weights), "{} still there", weights.display());
    assert!(!exists(&gone.repo_dir()), "{} still there", gone.repo_dir().display());
    assert!(site.status()["removed"].as_array().unwrap().is_empty());
    assert_serves(&p, &kept);
    let again = gc(&site, false);
    assert_eq!(freed(&again), 0, "a second gc found more to do:\n{again}");
}

#[test]
fn a_blob_two_models_share_goes_only_when_neither_needs_it() {
    const SECOND: &str = "ajna-lifecycle-tokenizer";
    let site = Site::new();
    site.set("keep_previous", 0);
    let commit = site.origin().publish_repo(REPO, &version(1, 300_000));
    // A second model of the same repository at the same commit: the config and tokenizer only.
    let mut second = entry(SECOND, &commit);
    let artifact = &mut second["artifact"];
    let files = artifact["files"].as_array_mut().unwrap();
    files.retain(|f| f["path"] != WEIGHTS);
    let config = files.iter().find(|f| f["path"] == "config.json").unwrap().clone();
    artifact["path"] = config["path"].clone();
    artifact["filename"] = config["path"].clone();
    artifact["sha256"] = config["sha256"].clone();
    artifact["sizeBytes"] = config["sizeBytes"].clone();
    artifact["format"] = "other".into();
    let first = deploy(&site, &commit, &[second.clone()]);
    let other = site.planned(SECOND);
    let shared = first.file("config.json").blob.clone();
    assert_eq!(other.file("config.json").blob, shared);

    // The first model goes: its weights go, the shared files stay.
    site.write_entries(vec![second]);
    site.sync().assert_ok();
    assert!(!exists(&first.file(WEIGHTS).blob), "the first model's weights are still there");
    assert!(exists(&shared), "a blob the second model needs was removed");
    assert!(
        exists(other.file("config.json").snapshot.as_ref().unwrap()),
        "a snapshot link it needs was removed"
    );
    assert_serves(&other, &commit);
    assert_eq!(std::fs::read_to_string(other.reference("main")).expect("refs/main"), commit.id);

    // Then the second (a model of another repository stays deployed): nothing of the
    // repository is left.
    let unrelated = site.origin().publish_repo("test-org/unrelated", &version(5, 1000));
    site.write_entries(vec![entry("ajna-unrelated", &unrelated)]);
    site.sync().assert_ok();
    assert!(!exists(&shared), "{} is still there", shared.display());
    assert!(!exists(&other.repo_dir()), "{} is still there", other.repo_dir().display());
}

#[test]
fn files_other_tools_put_in_the_cache_and_the_store_are_left_alone() {
    let site = Site::new();
    site.set("keep_previous", 0);
    let c1 = site.origin().publish_repo(REPO, &version(1, 300_000));
    let p1 = deploy(&site, &c1, &[]);
    // What huggingface_hub and a user leave: another repository, a `.no_exist` marker, a
    // snapshot of another commit linking to our weights, files in the store and by-chakra.
    let foreign_repo = site.cache().join("models--someone--else");
    let foreign = [
        (foreign_repo.join("blobs/aaaa"), Some("bytes")),
        (foreign_repo.join("refs/main"), Some("1234")),
        (p1.repo_dir().join(".no_exist").join(&c1.id).join("missing.json"), Some("")),
        (site.store().join("notes.txt"), Some("an admin's notes")),
        (site.store().join("ajna-by-hand").join("model.bin"), Some("a model copied by hand")),
    ];
    for (path, content) in &foreign {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content.unwrap()).unwrap();
    }
    let other_commit = "f".repeat(40);
    let hf_link = p1.repo_dir().join("snapshots").join(&other_commit).join(WEIGHTS);
    std::fs::create_dir_all(hf_link.parent().unwrap()).unwrap();
    let weights_sha = &p1.file(WEIGHTS).sha256;
    std::os::unix::fs::symlink(format!("../../blobs/{weights_sha}"), &hf_link).unwrap();
    let foreign_snapshot = foreign_repo.join("snapshots/1234/x.bin");
    std::fs::create_dir_all(foreign_snapshot.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("../../blobs/aaaa", &foreign_snapshot).unwrap();
    let user_link = site.store().join("by-chakra/ajna/handmade");
    std::os::unix::fs::symlink("../../ajna-by-hand", &user_link).unwrap();
    let before: Vec<PathBuf> = walk(&foreign_repo);

    let c2 = site.origin().publish_repo(REPO, &version(2, 300_000));
    let p2 = deploy(&site, &c2, &[]);
    assert_serves(&p2, &c2);
    // v1's own config went; its weights stay, since a snapshot models-fetch did not write
    // links to them.
    assert!(!exists(&p1.file("config.json").blob), "v1's config is still there");
    assert!(exists(&p1.file(WEIGHTS).blob), "a blob another tool's snapshot links to was removed");
    assert!(std::fs::read(&hf_link).is_ok(), "{} no longer resolves", hf_link.display());
    assert!(!exists(&p1.snapshot_dir(&c1.id)), "v1's snapshot folder is still there");
    for (path, content) in &foreign {
        assert_eq!(std::fs::read_to_string(path).ok().as_deref(), *content, "{} was touched", path.display());
    }
    assert_eq!(walk(&foreign_repo), before, "the other repository was touched");
    assert!(exists(&user_link), "a link by someone else in by-chakra was removed");
}

#[test]
fn low_on_space_a_kept_version_is_dropped_to_make_room_never_the_published_one() {
    let site = Site::new();
    // 32 MiB; each version's weights are 6 MiB and a download keeps 16 MiB free beyond itself.
    let Some(_tmpfs) = Tmpfs::mount(&site.cache(), "32m") else { return };
    site.set("keep_previous", 5);
    let mib = 1 << 20;
    let c1 = site.origin().publish_repo(REPO, &version(1, 6 * mib));
    let p1 = deploy(&site, &c1, &[]);
    let c2 = site.origin().publish_repo(REPO, &version(2, 6 * mib));
    let p2 = deploy(&site, &c2, &[]);
    assert_on_disk(&p1);

    // v3 fits only once v1 (kept, the oldest) is given back.
    let c3 = site.origin().publish_repo(REPO, &version(3, 6 * mib));
    site.write_entries(vec![entry(ID, &c3)]);
    let run = site.sync();
    run.assert_ok();
    assert!(run.out.contains("low on space: removed the kept previous version"), "{}", run.out);
    let p3 = site.planned(ID);
    assert_serves(&p3, &c3);
    assert_gone(&p1, &c1, &[&p2, &p3]);
    assert_on_disk(&p2);

    // v4 does not fit even without v2: v2 goes, then the download is refused; v3, published,
    // stays whole.
    let c4 = site.origin().publish_repo(REPO, &version(4, 20 * mib));
    site.write_entries(vec![entry(ID, &c4)]);
    let run = site.sync();
    run.assert_failed(&[74], ID, &["not enough space"]);
    assert_serves(&p3, &c3);
    assert_eq!(crate::fixture::canonical(&p3.model_path), crate::fixture::canonical(&p3.tree));
    site.assert_invariant("after the refused download");
}

#[test]
fn a_gc_killed_at_any_unlink_leaves_every_published_model_whole_and_the_next_finishes() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is needed to kill gc at its n-th unlink (.ci/test installs it)");
    }
    const OTHER: &str = "ajna-other";
    let site = Site::new();
    let c1 = site.origin().publish_repo(REPO, &version(1, 300_000));
    let other_commit = site.origin().publish_repo("test-org/removed", &version(9, 200_000));
    deploy(&site, &c1, &[entry(OTHER, &other_commit)]);
    let (p1, other) = (site.planned(ID), site.planned(OTHER));
    let c2 = site.origin().publish_repo(REPO, &version(2, 300_000));
    let p2 = deploy(&site, &c2, &[]);
    assert_on_disk(&p1);
    assert_on_disk(&other);
    // Now nothing is kept: v1 and the removed model are to go.
    site.set("keep_previous", 0);
    site.write_config();
    let dry = gc(&site, true);
    assert!(dry.lines().count() > 8, "too little to remove for the test to mean anything:\n{dry}");

    let binary = env!("CARGO_BIN_EXE_models-fetch");
    let mut killed = 0;
    for n in 1.. {
        assert!(n < 200, "gc was still killed at its 200th unlink");
        let mut command = Command::new("strace");
        command
            .args(["-f", "-o", "/dev/null", "-e", "trace=unlink,unlinkat,rmdir"])
            .arg("-e")
            .arg(format!("inject=unlink,unlinkat,rmdir:signal=SIGKILL:when={n}"))
            .arg(binary)
            .args(["gc", "--config"])
            .arg(site.config())
            .current_dir(site.dir());
        crate::fixture::scrub_env(&mut command);
        let output = command.output().expect("strace runs");
        // Whatever was removed so far, the published model is whole.
        assert_serves(&p2, &c2);
        site.assert_invariant(&format!("gc killed at unlink {n}"));
        if output.status.success() {
            break;
        }
        killed += 1;
    }
    assert!(killed >= 5, "gc was killed only {killed} times");
    let last = gc(&site, false);
    assert_eq!(freed(&last), 0, "the last gc left something to do:\n{last}");
    assert_gone(&p1, &c1, &[&p2]);
    assert!(
        !exists(&other.repo_dir()),
        "{} is still there: {:#?}",
        other.repo_dir().display(),
        walk(&other.repo_dir())
    );
    assert_serves(&p2, &c2);
}

#[test]
fn the_daemon_removes_a_model_on_reload_and_counts_what_it_gave_back() {
    use crate::daemon::{Daemon, all_ready};
    const OTHER: &str = "ajna-other";
    let site = Site::new();
    site.set("keep_previous", 0);
    site.set("metrics_file", "metrics.prom");
    let kept = site.origin().publish_repo(REPO, &version(1, 300_000));
    let gone_commit = site.origin().publish_repo("test-org/removed", &version(9, 200_000));
    site.write_entries(vec![entry(ID, &kept), entry(OTHER, &gone_commit)]);
    let daemon = Daemon::start(&site);
    daemon.expect_status(0, Duration::from_secs(20), "all ready", all_ready);
    let gone = site.planned(OTHER);
    assert_serves(&gone, &gone_commit);

    let from = daemon.messages().len();
    site.write_entries(vec![entry(ID, &kept)]);
    daemon.reload_until_all_ready(from);
    let metrics = || std::fs::read_to_string(site.path("metrics.prom")).unwrap_or_default();
    let counter = |name: &str| {
        let text = metrics();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).map(str::to_owned);
        line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counter("models_fetch_reclaimed_bytes_total").unwrap_or(0) < 200_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing reclaimed:\n{}\n{}",
            metrics(),
            daemon.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!exists(&gone.model_path), "{} still there", gone.model_path.display());
    assert!(!exists(&gone.repo_dir()), "{} still there", gone.repo_dir().display());
    let cache = counter("models_fetch_cache_bytes").expect("models_fetch_cache_bytes");
    assert!((300_000..1_000_000).contains(&cache), "cache bytes {cache}:\n{}", metrics());
    assert!(!metrics().contains(OTHER), "the metrics still name the removed model:\n{}", metrics());
    let status = site.status();
    let ids: Vec<&str> =
        status["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ID], "{status:#}");
    let log = daemon.report();
    assert!(log.contains("removed the blob") && log.contains("model_id=ajna-other"), "{log}");
    assert_serves(&site.planned(ID), &kept);
}

#[test]
fn prune_false_removes_nothing_until_gc_is_run() {
    let site = Site::new();
    site.set("keep_previous", 0);
    site.set("prune", false);
    let ((c1, p1), (c2, p2)) = v1_then_v2(&site);
    let out = gc(&site, false);
    assert!(freed(&out) >= 300_000, "{out}");
    assert_gone(&p1, &c1, &[&p2]);
    assert_serves(&p2, &c2);
}

#[test]
fn a_record_naming_paths_outside_the_cache_touches_none_of_them() {
    let site = Site::new();
    site.set("keep_previous", 0);
    let c1 = site.origin().publish_repo(REPO, &version(1, 300_000));
    let p1 = deploy(&site, &c1, &[]);
    // A record planted in the state folder, naming files and links elsewhere, with a stamp
    // that matches its "blob".
    let outside = site.path("outside");
    let blob = site.write("outside/blob", b"not a blob");
    let link = outside.join("snapshots/link");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("target", &link).unwrap();
    let reference = site.write("outside/refs/main", b"c0");
    let sha = sha256_hex(b"not a blob");
    let state = p1.state_dir();
    let stamp =
        std::fs::read_to_string(state.join("stamps").join(format!("{}.json", p1.file(WEIGHTS).sha256)))
            .unwrap();
    let mut stamp: Value = serde_json::from_str(&stamp).unwrap();
    let meta = std::fs::metadata(&blob).unwrap();
    use std::os::unix::fs::MetadataExt;
    stamp["sha256"] = sha.clone().into();
    stamp["size"] = meta.len().into();
    stamp["inode"] = meta.ino().into();
    stamp["mtime_ns"] = (i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()))
        .to_string()
        .parse::<Value>()
        .unwrap();
    site.write(&format!("store/.models-fetch/stamps/{sha}.json"), stamp.to_string().as_bytes());
    let record = serde_json::json!({
        "id": "evil", "key": "k", "version": "1", "chakra": "ajna", "seq": 1,
        "files": [{ "name": "x", "sha256": sha, "size": meta.len(), "blob": blob }],
        "snapshots": [{ "path": link, "target": "target" }],
        "refs": [{ "path": reference, "commit": "c0", "snapshot_dir": outside.join("snapshots") }],
    });
    site.write("store/.models-fetch/versions/evil/k.json", record.to_string().as_bytes());
    let out = gc(&site, false);
    assert_eq!(freed(&out), 0, "{out}");
    for path in [&blob, &link, &reference] {
        assert!(exists(path), "{} was removed:\n{out}", path.display());
    }
    assert_serves(&p1, &c1);
}
