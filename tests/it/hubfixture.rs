//! The in-process origin (`origin.rs`) proved against the real client: a test fixture that
//! imitates the Hub is trusted only once the real `huggingface_hub` has downloaded from it.
//!
//! A tiny but real model (`tests/models/make_tiny.py`: a BERT config, a `tokenizers` tokenizer,
//! safetensors shards and their index, a nested `1_Pooling/config.json`), plus files with unusual
//! names, is published as a repository at a commit. The real `huggingface_hub` then downloads it
//! ONLINE from the origin (`tests/models/hub_online.py`: `snapshot_download`, `list_repo_tree`,
//! `model_info`), and `tests/models/check_offline.py` loads the result offline with
//! huggingface_hub, transformers and safetensors. Private and gated repositories, a `main` that
//! moves and a file served unlike its tree's `oid` are checked the same way.
//!
//! Needs the venv `.ci/test` installs (`$HF_PYTHON`, else `.ci/tools/venv/bin/python`); without
//! either the tests say why and pass without checking anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixture::{Repo, Storage, TOKEN, root, run_with_limit, scrub_env, temp_dir, write};
use crate::origin::{Commit, Origin, Route, git_blob_sha1};

const REPO: &str = "test-org/tiny-bert";

/// Files whose names the Hub URL-encodes: spaces, `+`, `=`, `%`, non-ASCII, in folders; one in
/// git and one in LFS.
const ODD_GIT: &str = "extras/name with spaces+plus=equals%25 ünïcødé.txt";
const ODD_LFS: &str = "extras/deep/wéights +1=2.bin";

/// The venv's python, or `None` (with the reason printed) when there is none.
pub(crate) fn python() -> Option<PathBuf> {
    let path = match std::env::var_os("HF_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => root().join(".ci/tools/venv/bin/python"),
    };
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("HF_PYTHON").is_none(), "HF_PYTHON={} does not exist", path.display());
    eprintln!(
        "SKIPPED: no python with huggingface_hub and transformers (HF_PYTHON unset, {} missing); \
         .ci/test creates it",
        path.display()
    );
    None
}

/// Runs `python script args` (scrubbed environment) to its end within two minutes.
/// `check_offline.py` on `cache` for `repo` at revision `main` and `commit`, with `store` as
/// the model folder and `expect` the files it must hold: its exit status, its JSON report, and
/// everything it printed.
pub(crate) fn check_offline(
    python: &Path,
    cache: &Path,
    repo: &str,
    commit: &str,
    store: &Path,
    expect: &Path,
) -> (bool, Value, String) {
    let utf8 = |p: &Path| p.to_str().expect("UTF-8").to_owned();
    let (cache, store, expect) = (utf8(cache), utf8(store), utf8(expect));
    let args = [
        "--cache",
        &cache,
        "--repo",
        repo,
        "--revision",
        "main",
        "--commit",
        commit,
        "--store",
        &store,
        "--expect",
        &expect,
    ];
    let (ok, stdout, stderr) = run_python(python, "check_offline.py", &args);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("check_offline.py: {e}\n{stdout}{stderr}"));
    (ok, report, format!("{stdout}{stderr}"))
}

pub(crate) fn run_python(python: &Path, script: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(python);
    command.arg(root().join("tests/models").join(script)).args(args);
    scrub_env(&mut command);
    command.env_remove("HF_HUB_CACHE").env_remove("HUGGINGFACE_HUB_CACHE").env_remove("HF_HOME");
    let run = run_with_limit(command, Duration::from_secs(120), &|| false);
    (run.code == Some(0), run.out.strip_suffix(&run.stderr).unwrap_or(&run.out).to_owned(), run.stderr)
}

/// The tiny model made in `dir/model` and what make_tiny.py says of it.
pub(crate) fn tiny_model(python: &Path, dir: &Path, seed: u32) -> (PathBuf, Value) {
    let out = dir.join(format!("model-{seed}"));
    let seed = seed.to_string();
    let (ok, stdout, stderr) =
        run_python(python, "make_tiny.py", &[out.to_str().expect("UTF-8"), "--seed", &seed]);
    assert!(ok, "make_tiny.py failed:\n{stdout}{stderr}");
    (out, serde_json::from_str(&stdout).expect("make_tiny.py prints JSON"))
}

/// The tiny model of `model_dir` as the Hub would hold it, with its `.gitattributes` and two
/// oddly named files.
pub(crate) fn repo_of(model_dir: &Path) -> Repo {
    Repo::from_dir(model_dir)
        .with_gitattributes()
        .git(ODD_GIT, "a small file with an unusual name\n")
        .lfs(ODD_LFS, crate::fixture::data(7, 3000))
}

/// Runs hub_online.py with `ops` against `origin`, caching in `cache`; its results.
fn online(python: &Path, dir: &Path, origin: &Origin, cache: &Path, ops: Value) -> Vec<Value> {
    let spec = json!({ "endpoint": origin.hub_url(), "cache_dir": cache, "token": TOKEN, "ops": ops });
    let spec_path = write(dir, "online-spec.json", &spec.to_string());
    let (ok, stdout, stderr) = run_python(python, "hub_online.py", &[spec_path.to_str().expect("UTF-8")]);
    assert!(ok, "hub_online.py failed:\n{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    report["results"].as_array().expect("results").clone()
}

fn value(result: &Value) -> &Value {
    assert_eq!(result["ok"], true, "{result:#}");
    &result["value"]
}

fn failure(result: &Value) -> (String, String, u64) {
    assert_eq!(result["ok"], false, "succeeded: {result:#}");
    let text = |key: &str| result[key].as_str().unwrap_or_default().to_owned();
    (text("error"), text("error_code"), result["status"].as_u64().unwrap_or_default())
}

/// What `list_repo_tree(recursive=True)` must give for `commit`: every file with its oid, size
/// and LFS data, and every folder, sorted by path.
fn expected_tree(commit: &Commit) -> Vec<Value> {
    let mut entries: Vec<Value> = commit
        .files
        .iter()
        .map(|f| {
            let lfs = (f.storage == Storage::Lfs).then(
                || json!({ "sha256": f.blob.sha256, "size": f.blob.size, "pointer_size": f.pointer_size }),
            );
            json!({ "type": "file", "path": f.path, "oid": f.oid, "size": f.blob.size, "lfs": lfs })
        })
        .collect();
    let mut dirs: Vec<String> = commit
        .files
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.path.split('/').collect();
            (1..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    entries.extend(dirs.into_iter().map(|d| json!({ "type": "directory", "path": d })));
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    entries
}

/// The tree as listed, without the folders' oids (checked apart: 40 hex each).
fn listed_tree(value: &Value) -> Vec<Value> {
    let mut entries = value.as_array().expect("a list").clone();
    for entry in &mut entries {
        if entry["type"] == "directory" {
            let oid = entry.as_object_mut().expect("entry").remove("oid").expect("a folder oid");
            assert!(oid.as_str().is_some_and(|o| o.len() == 40), "folder oid {oid}");
        }
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    entries
}

/// `{path: {sha256, size}}` of every file of `commit`.
pub(crate) fn expected_files(commit: &Commit) -> Value {
    let files =
        commit.files.iter().map(|f| (f.path.clone(), json!({"sha256": f.blob.sha256, "size": f.blob.size})));
    Value::Object(files.collect())
}

#[test]
fn real_huggingface_hub_downloads_the_tiny_model_from_the_origin_and_loads_it_offline() {
    let Some(python) = python() else { return };
    let dir = temp_dir();
    let (model_dir, made) = tiny_model(&python, dir.path(), 1);
    let shards = made["shards"].as_array().expect("shards");
    assert!(shards.len() >= 2, "{made:#}");
    let files = made["files"].as_object().expect("files");
    for required in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        assert!(files.contains_key(required), "make_tiny.py made no {required}: {made:#}");
    }
    for required in ["model.safetensors.index.json", "generation_config.json", "1_Pooling/config.json"] {
        assert!(files.contains_key(required), "make_tiny.py made no {required}: {made:#}");
    }

    let origin = Origin::start(Some(TOKEN));
    origin.tree_page_size(5);
    let repo = repo_of(&model_dir);
    let v1 = origin.publish_repo(REPO, &repo);
    assert!(v1.files.len() > 10, "fewer than two tree pages: {}", v1.files.len());
    for shard in shards {
        assert_eq!(v1.file(shard.as_str().expect("shard")).storage, Storage::Lfs, "{shard} kept in git");
    }
    assert_eq!(v1.file("config.json").storage, Storage::Git);
    assert_eq!(v1.file("1_Pooling/config.json").storage, Storage::Git);
    // main moves: version 2 has other weights, another README and no vocab.txt; v1 stays
    // resolvable by its id.
    let (model_v2, _) = tiny_model(&python, dir.path(), 2);
    let v2_repo = repo_of(&model_v2).file("README.md", "# tiny-bert, version 2\n").without("vocab.txt");
    let v2 = origin.publish_repo(REPO, &v2_repo);
    assert_ne!(v1.id, v2.id);
    assert_eq!(origin.commit_of(REPO, "main").as_deref(), Some(v2.id.as_str()));

    let cache = dir.path().join("hub-cache");
    let results = online(
        &python,
        dir.path(),
        &origin,
        &cache,
        json!([
            { "op": "snapshot_download", "repo": REPO },
            { "op": "snapshot_download", "repo": REPO, "revision": v1.id },
            { "op": "list_repo_tree", "repo": REPO, "revision": v2.id },
            { "op": "list_repo_tree", "repo": REPO, "revision": v1.id },
            { "op": "model_info", "repo": REPO },
            { "op": "model_info", "repo": REPO, "revision": v1.id },
        ]),
    );
    let snapshot = |result: &Value| PathBuf::from(value(result).as_str().expect("a folder"));
    let (main_folder, v1_folder) = (snapshot(&results[0]), snapshot(&results[1]));
    assert_eq!(main_folder.file_name().and_then(|n| n.to_str()), Some(v2.id.as_str()), "main is v2");
    assert_eq!(v1_folder.file_name().and_then(|n| n.to_str()), Some(v1.id.as_str()), "v1 by its commit");
    for (folder, commit) in [(&main_folder, &v2), (&v1_folder, &v1)] {
        for file in &commit.files {
            let bytes =
                std::fs::read(folder.join(&file.path)).unwrap_or_else(|e| panic!("{}: {e}", file.path));
            assert_eq!(bytes, *file.blob.content, "{} of {} differs", file.path, commit.id);
        }
    }
    assert_eq!(listed_tree(value(&results[2])), expected_tree(&v2), "list_repo_tree at v2");
    assert_eq!(listed_tree(value(&results[3])), expected_tree(&v1), "list_repo_tree at v1");
    for (result, commit) in [(&results[4], &v2), (&results[5], &v1)] {
        let info = value(result);
        assert_eq!(
            (&info["id"], &info["sha"], &info["private"], &info["gated"]),
            (&json!(REPO), &json!(commit.id), &json!(false), &json!(false))
        );
        let siblings: Vec<Value> = commit
            .files
            .iter()
            .map(|f| {
                let lfs = (f.storage == Storage::Lfs).then(|| {
                    json!({ "sha256": f.blob.sha256, "size": f.blob.size, "pointer_size": f.pointer_size })
                });
                json!({ "rfilename": f.path, "size": f.blob.size, "blob_id": f.oid, "lfs": lfs })
            })
            .collect();
        assert_eq!(info["siblings"], Value::Array(siblings), "model_info siblings of {}", commit.id);
    }

    // How the client got there: pages followed through `Link`, LFS files through the CDN without
    // the token, small files from the Hub itself.
    let api = origin.requests_to(Route::HubApi);
    let pages = api.iter().filter(|r| r.target.contains("/tree/") && r.target.contains("cursor=")).count();
    assert!(pages >= 2 * 2, "list_repo_tree did not follow the pages: {:#?}", api);
    let cdn = origin.requests_to(Route::Cdn);
    assert!(cdn.iter().all(|r| r.header("authorization").is_none()), "the CDN got the token");
    for commit in [&v1, &v2] {
        for file in commit.files.iter().filter(|f| f.storage == Storage::Lfs) {
            assert!(
                cdn.iter().any(|r| r.path().ends_with(&file.blob.sha256)),
                "{} not fetched from the CDN",
                file.path
            );
        }
    }
    let gets = origin.requests_to(Route::HubGet);
    let encoded = "name%20with%20spaces%2Bplus%3Dequals%2525%20%C3%BCn%C3%AFc%C3%B8d%C3%A9.txt";
    assert!(gets.iter().any(|r| r.target.ends_with(encoded)), "the odd name was not URL-encoded as expected");

    // Offline: huggingface_hub, transformers and safetensors load what the client downloaded,
    // by repo id, at the commit, and from a store folder that links to the snapshot.
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("store");
    std::os::unix::fs::symlink(&main_folder, store.join("tiny-bert")).expect("store link");
    let expect = write(dir.path(), "expect.json", &expected_files(&v2).to_string());
    let store_folder = store.join("tiny-bert");
    let check = || {
        let (ok, report, output) = check_offline(&python, &cache, REPO, &v2.id, &store_folder, &expect);
        assert_eq!(ok, report["ok"] == true, "exit status and report disagree:\n{output}");
        report
    };
    let report = check();
    assert_eq!(report["ok"], true, "check_offline.py failed:\n{report:#}");
    assert_eq!(report["commit"], json!(v2.id));
    let checks = report["checks"].as_array().expect("checks");
    for needed in
        ["AutoConfig.from_pretrained(store folder)", "AutoTokenizer.from_pretrained(repo id @ commit)"]
    {
        assert!(checks.iter().any(|c| c["check"] == needed && c["ok"] == true), "no {needed} in {report:#}");
    }

    // The check can fail: without refs/main the repo id alone finds nothing, and a damaged
    // shard does not open.
    let failed = |report: &Value| -> Vec<String> {
        let checks = report["checks"].as_array().expect("checks");
        checks
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["check"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let repo_dir = cache.join("models--test-org--tiny-bert");
    std::fs::rename(repo_dir.join("refs/main"), dir.path().join("main.ref")).expect("move refs/main away");
    let without_ref = failed(&check());
    assert!(
        without_ref.contains(&"snapshot_download(repo, local_files_only=True)".to_owned()),
        "{without_ref:#?}"
    );
    assert!(without_ref.contains(&"AutoConfig.from_pretrained(repo id)".to_owned()), "{without_ref:#?}");
    std::fs::rename(dir.path().join("main.ref"), repo_dir.join("refs/main")).expect("refs/main back");
    let shard = v2.file(shards[1].as_str().expect("shard"));
    let blob = repo_dir.join("blobs").join(&shard.blob.sha256);
    std::fs::write(&blob, &shard.blob.content[..shard.blob.content.len() / 2]).expect("truncate a shard");
    let damaged = failed(&check());
    let opened = format!("snapshot: safe_open {}", shard.path);
    assert!(damaged.contains(&opened), "{damaged:#?}");
    assert!(damaged.iter().any(|c| c == &format!("{} has the expected bytes", shard.path)), "{damaged:#?}");
}

#[test]
fn real_huggingface_hub_meets_private_and_gated_repositories_and_a_lying_oid() {
    let Some(python) = python() else { return };
    let dir = temp_dir();
    let origin = Origin::start(None);
    let small = Repo::new()
        .with_gitattributes()
        .file("config.json", "{\"model_type\": \"bert\"}\n")
        .file("model.safetensors", crate::fixture::data(3, 2048));
    origin.publish_repo("test-org/private", &small);
    origin.make_private("test-org/private");
    origin.publish_repo("test-org/gated", &small);
    origin.gate("test-org/gated", false);
    origin.publish_repo("test-org/granted", &small);
    origin.gate("test-org/granted", true);
    let liar = origin.publish_repo("test-org/liar", &small);
    let served = b"{\"model_type\": \"gpt2\"}\n".to_vec();
    origin.serve_instead("test-org/liar", "config.json", served.clone());

    let cache = dir.path().join("hub-cache");
    let file = |repo: &str, token: bool| json!({ "op": "hf_hub_download", "repo": repo, "filename": "config.json", "token": token });
    let results = online(
        &python,
        dir.path(),
        &origin,
        &cache,
        json!([
            { "op": "model_info", "repo": "test-org/private", "token": false },
            { "op": "snapshot_download", "repo": "test-org/private", "token": false },
            { "op": "model_info", "repo": "test-org/private" },
            { "op": "snapshot_download", "repo": "test-org/private" },
            { "op": "model_info", "repo": "test-org/gated", "token": false },
            { "op": "list_repo_tree", "repo": "test-org/gated", "token": false },
            file("test-org/gated", false),
            file("test-org/gated", true),
            file("test-org/granted", true),
            file("test-org/liar", true),
            { "op": "model_info", "repo": "test-org/nonexistent" },
        ]),
    );
    assert_eq!(failure(&results[0]), ("RepositoryNotFoundError".into(), "RepoNotFound".into(), 401));
    assert_eq!(failure(&results[1]).0, "RepositoryNotFoundError");
    assert_eq!(value(&results[2])["private"], true);
    assert!(value(&results[3]).is_string());
    let gated = value(&results[4]);
    assert_eq!(gated["gated"], "manual", "model info of a gated repo is public");
    assert_eq!(value(&results[5]).as_array().map(Vec::len), Some(3), "its tree is public");
    assert_eq!(failure(&results[6]), ("GatedRepoError".into(), "GatedRepo".into(), 401));
    assert_eq!(failure(&results[7]), ("GatedRepoError".into(), "GatedRepo".into(), 403));
    assert!(value(&results[8]).is_string(), "granted access downloads");
    // The Hub's word (tree oid, ETag) is the real file's; what it serves is not. The Python
    // library checks only sizes, so it takes the wrong bytes: finding that is the caller's job.
    let taken = std::fs::read(value(&results[9]).as_str().expect("a path")).expect("downloaded");
    assert_eq!(taken, served);
    let listed = liar.file("config.json");
    assert_ne!(git_blob_sha1(&taken), listed.oid, "the served bytes must not match the tree's oid");
    assert_eq!(listed.oid, git_blob_sha1(&listed.blob.content));
    assert_eq!(failure(&results[10]).0, "RepositoryNotFoundError");
}

/// `GET target` on `base` (plain http); the status, headers (names in lower case) and body.
fn get(base: &str, target: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let address = base.strip_prefix("http://").expect("http URL");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, answer[split..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Every entry of a tree listing, following `Link: <...>; rel="next"`; and how many pages.
fn all_pages(origin: &Origin, target: &str) -> (Vec<Value>, usize) {
    let (mut entries, mut pages, mut next) = (Vec::new(), 0, Some(target.to_owned()));
    while let Some(target) = next.take() {
        let (status, headers, body) = get(origin.hub_url(), &target);
        assert_eq!(status, 200, "{target}: {}", String::from_utf8_lossy(&body));
        let page: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        entries.extend(page);
        pages += 1;
        next = header(&headers, "link").map(|link| {
            let url =
                link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).expect("rel=next").0;
            url.strip_prefix(origin.hub_url()).expect("a URL on the Hub").to_owned()
        });
    }
    (entries, pages)
}

#[test]
fn origin_lists_real_git_trees_in_pages_and_resolves_every_commit() {
    let origin = Origin::start(None);
    origin.tree_page_size(2);
    let v1 = origin.publish_repo(
        REPO,
        &Repo::new()
            .file("config.json", "{}\n")
            .file("w/model.safetensors", crate::fixture::data(1, 4096))
            .file("w/a b+c=d é.txt", "odd\n"),
    );
    let v2 = origin.publish_repo(REPO, &Repo::new().file("config.json", "{\"v\": 2}\n"));

    let (entries, pages) = all_pages(&origin, &format!("/api/models/{REPO}/tree/{}?recursive=true", v1.id));
    assert_eq!(pages, 2, "{entries:#?}");
    let paths: Vec<&str> = entries.iter().map(|e| e["path"].as_str().expect("path")).collect();
    assert_eq!(paths, ["config.json", "w", "w/a b+c=d é.txt", "w/model.safetensors"]);
    let lfs = &entries[3];
    assert_eq!(lfs["lfs"]["oid"], json!(v1.file("w/model.safetensors").blob.sha256));
    assert_eq!((&lfs["size"], &lfs["lfs"]["size"]), (&json!(4096), &json!(4096)));
    assert!(entries[0].get("lfs").is_none(), "a git file has no lfs data");
    let (top, _) = all_pages(&origin, &format!("/api/models/{REPO}/tree/{}", v1.id));
    assert_eq!(top.iter().map(|e| e["path"].clone()).collect::<Vec<_>>(), [json!("config.json"), json!("w")]);
    let (inside, _) = all_pages(&origin, &format!("/api/models/{REPO}/tree/{}/w", v1.id));
    assert_eq!(inside.len(), 2);
    let (main, _) = all_pages(&origin, &format!("/api/models/{REPO}/tree/main?recursive=true"));
    assert_eq!(main.len(), 1, "main is v2: {main:#?}");

    // The oids are git's own: the same files (LFS ones as their pointers) in a git repository
    // give the same blob and tree ids.
    let git_dir = temp_dir();
    let git = |args: &[&str]| {
        let output = Command::new("git").args(args).current_dir(git_dir.path()).output().expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    git(&["init", "-q"]);
    for file in &v1.files {
        let content = match file.storage {
            Storage::Git => file.blob.content.to_vec(),
            Storage::Lfs => format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
                file.blob.sha256, file.blob.size
            )
            .into_bytes(),
        };
        assert_eq!(Some(content.len() as u64), file.pointer_size.or(Some(file.blob.size)));
        write_all(&git_dir.path().join(&file.path), &content);
    }
    git(&["add", "-A"]);
    let root_tree = git(&["write-tree"]);
    for entry in &entries {
        let path = entry["path"].as_str().expect("path");
        assert_eq!(entry["oid"], json!(git(&["rev-parse", &format!("{root_tree}:{path}")])), "oid of {path}");
    }

    // Resolving: each commit by its id, main at the newest; errors as the Hub words them.
    let resolve = |revision: &str, path: &str| {
        let path =
            percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string();
        get(origin.hub_url(), &format!("/{REPO}/resolve/{revision}/{}", path.replace("%2F", "/")))
    };
    let (status, headers, body) = resolve(&v1.id, "w/a b+c=d é.txt");
    assert_eq!(
        (status, header(&headers, "x-repo-commit"), body.as_slice()),
        (200, Some(v1.id.as_str()), &b"odd\n"[..])
    );
    assert_eq!(header(&headers, "etag"), Some(format!("\"{}\"", v1.file("w/a b+c=d é.txt").oid).as_str()));
    let (status, headers, _) = resolve("main", "config.json");
    assert_eq!((status, header(&headers, "x-repo-commit")), (200, Some(v2.id.as_str())));
    let (status, headers, _) = resolve("main", "w/model.safetensors");
    assert_eq!((status, header(&headers, "x-error-code")), (404, Some("EntryNotFound")));
    assert_eq!(
        header(&headers, "x-repo-commit"),
        Some(v2.id.as_str()),
        "a 404 names the commit it looked in"
    );
    let (status, headers, _) = resolve(&v1.id, "w/model.safetensors");
    assert_eq!(
        (status, header(&headers, "x-linked-etag")),
        (302, Some(format!("\"{}\"", v1.file("w/model.safetensors").blob.sha256).as_str()))
    );
    let (status, headers, _) = resolve("no-such-branch", "config.json");
    assert_eq!((status, header(&headers, "x-error-code")), (404, Some("RevisionNotFound")));
    let (status, _, body) = get(origin.hub_url(), &format!("/api/models/{REPO}/revision/{}", v1.id));
    let info: Value = serde_json::from_slice(&body).expect("model info JSON");
    assert_eq!(
        (status, &info["sha"], info["siblings"].as_array().map(Vec::len)),
        (200, &json!(v1.id), Some(3))
    );
}

fn write_all(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folders");
    std::fs::write(path, content).expect("write");
}
