//! `models-fetch lock`: a Hub repository pinned into the index from the in-process Hub's API
//! (revision, a tree of several pages, resolve of the small files), the entry valid; private and
//! gated repositories with and without the token; a `main` that moves and `--update` telling
//! what changed (exit 0), then nothing (exit 1); what cannot be pinned refused; the token never
//! printed and never sent off the endpoint's origin; `--write` under the index lock.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixture::{
    FULL, Repo, SEED, TOKEN, data, models_fetch, models_fetch_command, temp_dir, text, write,
};
use crate::origin::{Commit, Fault, Host, Origin, Route, Rule};

const REPO: &str = "test-org/tiny-set";

/// A sharded model as the Hub holds it: small files in git, weights in LFS.
fn model(seed: u64) -> Repo {
    Repo::new()
        .with_gitattributes()
        .git("config.json", format!("{{\"seed\": {seed}}}\n"))
        .git("tokenizer.json", "{\"vocab\": {}}\n")
        .git("1_Pooling/config.json", "{\"pooling\": \"mean\"}\n")
        .git("model.safetensors.index.json", "{\"weight_map\": {}}\n")
        .lfs("model-00001-of-00002.safetensors", data(seed, 5000))
        .lfs("model-00002-of-00002.safetensors", data(seed + 1, 3000))
}

struct Lock {
    dir: tempfile::TempDir,
    origin: Origin,
}

impl Lock {
    /// A Hub that needs no token for public repositories, and an empty index.
    fn new() -> Self {
        let dir = temp_dir();
        write(dir.path(), "index.json", "{\n  \"models\": []\n}\n");
        Lock { dir, origin: Origin::start(None) }
    }

    fn index(&self) -> PathBuf {
        self.dir.path().join("index.json")
    }

    fn token_file(&self) -> PathBuf {
        write(self.dir.path(), "token", &format!("{TOKEN}\n"))
    }

    /// `models-fetch lock ARGS --endpoint HUB --index INDEX`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = models_fetch_command();
        command
            .arg("lock")
            .args(args)
            .arg("--endpoint")
            .arg(self.origin.hub_url())
            .arg("--index")
            .arg(self.index());
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("models-fetch runs");
        assert!(!text(&output).contains(TOKEN), "the token was printed:\n{}", text(&output));
        output
    }

    fn entry(&self, id: &str) -> Value {
        let index: Value = serde_json::from_slice(&std::fs::read(self.index()).unwrap()).unwrap();
        index["models"].as_array().unwrap().iter().find(|m| m["id"] == id).cloned().unwrap_or(Value::Null)
    }

    fn validate(&self, deny_stubs: bool) -> Output {
        let index = self.index();
        let mut args = vec!["validate", index.to_str().unwrap()];
        if deny_stubs {
            args.push("--deny-stubs");
        }
        models_fetch(&args)
    }

    /// No request that left the Hub's origin carried the token.
    fn assert_token_stayed_home(&self) {
        for request in self.origin.requests() {
            if request.host != Host::Hub {
                assert_eq!(
                    request.header("authorization"),
                    None,
                    "token sent to {:?} {}",
                    request.host,
                    request.target
                );
            }
        }
    }
}

fn args<'a>(first: &[&'a str], rest: &[&[&'a str]]) -> Vec<&'a str> {
    let mut all = first.to_vec();
    for more in rest {
        all.extend_from_slice(more);
    }
    all
}

/// The files of `commit` the default selection takes, as the entry must list them.
fn expected_files(commit: &Commit) -> Vec<Value> {
    commit
        .files
        .iter()
        .filter(|f| f.path != ".gitattributes")
        .map(|f| {
            let mut file = json!({ "path": f.path, "sha256": f.blob.sha256, "sizeBytes": f.blob.size });
            if f.storage == crate::fixture::Storage::Git {
                file["gitOid"] = json!(f.oid);
            }
            file
        })
        .collect()
}

#[test]
fn a_repository_of_several_tree_pages_is_pinned_and_validates() {
    let lock = Lock::new();
    let commit = lock.origin.publish_repo(REPO, &model(1));
    lock.origin.tree_page_size(2);
    let out = lock.run(&args(&[REPO, "--id", "tiny-set-v1", "--write"], &[SEED, FULL]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let entry = lock.entry("tiny-set-v1");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, entry, "the entry printed is the one written");
    let artifact = &entry["artifact"];
    assert_eq!(artifact["repo"], REPO);
    assert_eq!(artifact["revision"], "main");
    assert_eq!(artifact["commit"], commit.id.as_str());
    assert_eq!(artifact["files"], Value::Array(expected_files(&commit)));
    // The shard index is the primary file, and the format is the weights'.
    assert_eq!(artifact["filename"], "model.safetensors.index.json");
    assert_eq!(artifact["sha256"], commit.file("model.safetensors.index.json").blob.sha256.as_str());
    assert_eq!(artifact["format"], "safetensors");
    assert!(artifact.get("select").is_none() && artifact.get("path").is_none(), "{artifact}");

    // Every page was asked for at the commit, never by branch name, and followed to the end.
    let pages: Vec<_> =
        lock.origin.requests_to(Route::HubApi).into_iter().filter(|r| r.path().contains("/tree/")).collect();
    let listed = commit.files.len() + 1; // and the folder 1_Pooling
    assert_eq!(pages.len(), listed.div_ceil(2), "{:?}", pages.iter().map(|r| &r.target).collect::<Vec<_>>());
    assert!(pages.iter().all(|r| r.path().ends_with(&format!("/tree/{}", commit.id))));
    // LFS files are pinned from the tree: only the small files are downloaded.
    let downloads: Vec<_> = lock.origin.requests_to(Route::HubGet).into_iter().map(|r| r.target).collect();
    assert_eq!(downloads.len(), 4, "{downloads:?}");
    assert!(lock.origin.requests_to(Route::Cdn).is_empty());

    let check = lock.validate(true);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

#[test]
fn a_new_entry_gets_placeholders_deny_stubs_refuses() {
    let lock = Lock::new();
    lock.origin.publish_repo(REPO, &model(2));
    // What no placeholder can stand for is asked for before anything is fetched.
    let out = lock.run(&[REPO, "--id", "tiny-set-v1", "--chakra", "ajna"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        text(&out).contains("--frequency-hz, --geometry-dimensions, --temporal-scope, --tag"),
        "{}",
        text(&out)
    );
    assert!(lock.origin.requests().is_empty());

    let out = lock.run(&args(&[REPO, "--id", "tiny-set-v1", "--write"], &[SEED]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("warning: tiny-set-v1 still has placeholder values"), "{}", text(&out));
    assert_eq!(lock.entry("tiny-set-v1")["training"]["command"], "TODO-STUB: training command");
    assert_eq!(lock.validate(false).status.code(), Some(0));
    let denied = lock.validate(true);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    assert!(text(&denied).contains("/dataset/url"), "{}", text(&denied));

    // The metadata of the existing entry is kept when the model is locked again.
    let out = lock.run(&args(&[REPO, "--id", "tiny-set-v1", "--write"], &[FULL]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lock.entry("tiny-set-v1")["chakra"], "ajna");
    assert_eq!(lock.validate(true).status.code(), Some(0));
}

#[test]
fn a_private_repository_needs_the_token_which_stays_on_the_hub() {
    let lock = Lock::new();
    let commit = lock.origin.publish_repo(REPO, &model(3));
    lock.origin.make_private(REPO);
    let base = args(&[REPO, "--id", "tiny-set-v1"], &[SEED, FULL]);

    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("401") && said.contains("RepoNotFound") && said.contains("pass a token"), "{said}");

    let token = lock.token_file();
    let out = lock.run(&args(&base, &[&["--token-file", token.to_str().unwrap()]]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["artifact"]["commit"], commit.id.as_str());

    // HF_TOKEN, as the Hub's own tools read it.
    let out = lock.run_with(&base, &[("HF_TOKEN", TOKEN)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A wrong token is named by where it came from, never by its value.
    let out = lock.run_with(&base, &[("HF_TOKEN", "hf_not_the_right_one")]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("the token from HF_TOKEN was refused"), "{}", text(&out));
    assert!(!text(&out).contains("hf_not_the_right_one"), "{}", text(&out));

    // A small file the Hub sends elsewhere: the other origin never sees the token.
    lock.origin.add(Rule::once(Route::HubGet, Fault::RedirectTo(Host::Cdn2)).for_target("config.json"));
    let out = lock.run(&args(&base, &[&["--token-file", token.to_str().unwrap()]]));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert_eq!(lock.origin.requests_to(Route::Cdn2).len(), 1);
    lock.assert_token_stayed_home();
    // Every request to the Hub itself carried it.
    let hub = lock.origin.requests().into_iter().filter(|r| r.host == Host::Hub).count();
    assert!(hub > 0);
}

#[test]
fn a_gated_repository_refuses_its_files_clearly() {
    let lock = Lock::new();
    lock.origin.publish_repo(REPO, &model(4));
    lock.origin.gate(REPO, false);
    let base = args(&[REPO, "--id", "tiny-set-v1"], &[SEED, FULL]);

    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("401") && text(&out).contains("GatedRepo"), "{}", text(&out));
    assert!(text(&out).contains("the repository is gated"), "{}", text(&out));

    let token = lock.token_file();
    let with_token = args(&base, &[&["--token-file", token.to_str().unwrap()]]);
    let out = lock.run(&with_token);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("403") && said.contains("GatedRepo") && said.contains("not been granted"),
        "{said}"
    );
    assert!(said.contains(&format!("--token-file {}", token.display())), "{said}");

    lock.origin.gate(REPO, true);
    let out = lock.run(&with_token);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lock.assert_token_stayed_home();
}

#[test]
fn update_follows_main_and_tells_what_changed_then_that_nothing_did() {
    let lock = Lock::new();
    let first = lock.origin.publish_repo(REPO, &model(5).git("README.md", "# v1\n"));
    let out = lock.run(&args(&[REPO, "--id", "tiny-set-v1", "--exclude", "*.md", "--write"], &[SEED, FULL]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lock.entry("tiny-set-v1")["artifact"]["select"], json!({ "exclude": ["*.md"] }));

    // Nothing moved yet.
    let out = lock.run(&["--update", "tiny-set-v1", "--write"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("up to date at {}", first.id)),
        "{}",
        text(&out)
    );

    // main moves: new weights, a new file, one gone, and the README (excluded) changed.
    let second = lock.origin.publish_repo(
        REPO,
        &model(6).without("tokenizer.json").git("special_tokens_map.json", "{}\n").git("README.md", "# v2\n"),
    );
    let before = std::fs::read(lock.index()).unwrap();
    let out = lock.run(&["--update", "tiny-set-v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read(lock.index()).unwrap(), before, "without --write nothing is written");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains(&format!("commit {} -> {}", first.id, second.id)), "{report}");
    assert!(report.contains("+ special_tokens_map.json (3 bytes"), "{report}");
    assert!(report.contains("- tokenizer.json ("), "{report}");
    assert!(report.contains("~ model-00001-of-00002.safetensors: sha256 "), "{report}");
    assert!(report.contains("~ config.json: sha256 "), "{report}");
    assert!(!report.contains("README"), "the selection is kept: {report}");
    assert!(report.contains("1 added, 1 removed, 3 changed"), "{report}");

    let out = lock.run(&["--update", "tiny-set-v1", "--write"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let entry = lock.entry("tiny-set-v1");
    assert_eq!(entry["artifact"]["commit"], second.id.as_str());
    let mut expected = expected_files(&second);
    expected.retain(|f| f["path"] != "README.md");
    assert_eq!(entry["artifact"]["files"], Value::Array(expected));
    assert_eq!(entry["chakra"], "ajna", "the metadata is kept");
    assert_eq!(lock.validate(true).status.code(), Some(0));

    let out = lock.run(&["--update", "tiny-set-v1", "--write"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = lock.run(&["--update", "no-such-model"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
}

#[test]
fn include_and_exclude_select_files_as_hf_download_does() {
    let lock = Lock::new();
    let commit = lock.origin.publish_repo(REPO, &model(7).lfs("onnx/model.onnx", data(9, 100)));
    let out = lock.run(&args(
        &[
            REPO,
            "--id",
            "tiny-set-v1",
            "--include",
            "*.json",
            "--include",
            "onnx/",
            "--exclude",
            "tokenizer*",
        ],
        &[SEED, FULL],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> =
        entry["artifact"]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["1_Pooling/config.json", "config.json", "model.safetensors.index.json", "onnx/model.onnx"]
    );
    assert_eq!(entry["artifact"]["filename"], "model.safetensors.index.json");
    assert_eq!(
        entry["artifact"]["select"],
        json!({ "include": ["*.json", "onnx/"], "exclude": ["tokenizer*"] })
    );
    assert_eq!(entry["artifact"]["commit"], commit.id.as_str());

    // --path names the primary file; a literal --include that names nothing is refused.
    let out = lock.run(&args(
        &[REPO, "--id", "tiny-set-v1", "--include", "onnx/*", "--path", "onnx/model.onnx"],
        &[SEED, FULL],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["artifact"]["filename"], "onnx/model.onnx");
    assert_eq!(entry["artifact"]["format"], "onnx");
    let out = lock.run(&args(&[REPO, "--id", "tiny-set-v1", "--include", "vocab.txt"], &[SEED, FULL]));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("--include \"vocab.txt\": no such file"), "{}", text(&out));
    let out = lock.run(&args(&[REPO, "--id", "tiny-set-v1", "--include", "*.gguf"], &[SEED, FULL]));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("the selection takes none of the 8 files"), "{}", text(&out));
}

#[test]
fn what_cannot_be_pinned_is_refused() {
    let lock = Lock::new();
    let commit = lock.origin.publish_repo(REPO, &model(8));
    let base = args(&[REPO, "--id", "tiny-set-v1", "--write"], &[SEED, FULL]);

    // A small file served unlike the git blob id its tree lists (of the same size).
    lock.origin.serve_instead(REPO, "config.json", b"{\"seed\": 9}\n".to_vec());
    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("\"config.json\"") && said.contains(&commit.file("config.json").oid), "{said}");
    assert!(said.contains("is not the one the tree lists"), "{said}");
    assert_eq!(lock.entry("tiny-set-v1"), Value::Null, "nothing was written");
    lock.origin.serve_instead(REPO, "config.json", commit.file("config.json").blob.content.to_vec());

    // A tree whose next page leaves the commit (a listing by branch name).
    lock.origin.tree_page_size(3);
    let moved = format!(
        "<{}/api/models/{REPO}/tree/main?recursive=true&cursor=page-6>; rel=\"next\"",
        lock.origin.hub_url()
    );
    lock.origin
        .add(Rule::once(Route::HubApi, Fault::headers(&[("Link", &moved)])).for_target("cursor=page-3"));
    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("changed between pages"), "{}", text(&out));

    // A page that lists a path again.
    let again = format!(
        "<{}/api/models/{REPO}/tree/{}?recursive=true&cursor=page-1>; rel=\"next\"",
        lock.origin.hub_url(),
        commit.id
    );
    lock.origin
        .add(Rule::once(Route::HubApi, Fault::headers(&[("Link", &again)])).for_target("cursor=page-3"));
    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("lists \"1_Pooling/config.json\" again"), "{}", text(&out));

    // The Hub failing is transient.
    lock.origin.add(Rule::once(Route::HubApi, Fault::status(503, &[])));
    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert_eq!(lock.entry("tiny-set-v1"), Value::Null, "nothing was written");

    let out = lock.run(&base);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn write_waits_for_the_index_lock() {
    let lock = Lock::new();
    lock.origin.publish_repo(REPO, &model(9));
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(lock.dir.path()).join(".index.json.lock"))
        .unwrap();
    lock_file.lock().unwrap();

    let mut command = models_fetch_command();
    command
        .arg("lock")
        .args(args(&[REPO, "--id", "tiny-set-v1", "--write"], &[SEED, FULL]))
        .arg("--endpoint")
        .arg(lock.origin.hub_url())
        .arg("--index")
        .arg(lock.index())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    // It pins, then waits for the lock: the index is not touched meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lock.origin.requests_to(Route::HubGet).len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lock.entry("tiny-set-v1"), Value::Null);
    lock_file.unlock().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lock.entry("tiny-set-v1")["id"], "tiny-set-v1");
}
