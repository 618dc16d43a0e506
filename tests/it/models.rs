//! The tiny real model (`tests/models/make_tiny.py`: a BERT config, a `tokenizers` tokenizer,
//! two safetensors shards and their index, a nested `1_Pooling/config.json`, plus oddly named
//! files) published as a repository at a commit, indexed as a set pinned to it, and synced by
//! models-fetch; then the real huggingface_hub, transformers and safetensors load it offline
//! (`tests/models/check_offline.py`) from the Hub cache, by repo id and at the commit, and from
//! the store's folder `{store_dir}/{id}`; the same after `models-fetch lock` pinned it from the
//! Hub's API.
//!
//! Needs the venv `.ci/test` installs (`$HF_PYTHON`, else `.ci/tools/venv/bin/python`); without
//! either the test says why and passes without checking anything.

use serde_json::json;

use crate::fixture::index::set_entry;
use crate::fixture::{FULL, SEED, Site, text, write};
use crate::hubfixture::{check_offline, expected_files, python, repo_of, tiny_model};
use crate::origin::Route;

const REPO: &str = "test-org/tiny-bert";
const ID: &str = "ajna-tiny-bert";

#[test]
fn the_tiny_real_model_synced_as_a_set_loads_offline_from_the_cache_and_the_store_folder() {
    let Some(python) = python() else { return };
    let site = Site::new();
    let (model_dir, made) = tiny_model(&python, site.dir(), 1);
    let shards = made["shards"].as_array().expect("shards");
    assert!(shards.len() >= 2, "{made:#}");
    let commit = site.origin().publish_repo(REPO, &repo_of(&model_dir));
    let primary = shards[0].as_str().expect("a shard");
    site.write_entries(vec![set_entry(ID, "ajna", &commit, primary)]);
    site.sync().assert_ok();
    let planned = site.planned(ID);

    let expect = write(site.dir(), "expect.json", &expected_files(&commit).to_string());
    let (cache, store_folder) = (site.cache(), planned.model_path.clone());
    let (ok, report, output) = check_offline(&python, &cache, REPO, &commit.id, &store_folder, &expect);
    assert!(ok && report["ok"] == true, "check_offline.py failed:\n{report:#}\n{output}");
    assert_eq!(report["commit"], json!(commit.id));
    let checks = report["checks"].as_array().expect("checks");
    for needed in [
        "snapshot_download(repo, local_files_only=True)",
        "AutoConfig.from_pretrained(store folder)",
        "AutoTokenizer.from_pretrained(repo id @ commit)",
    ] {
        assert!(checks.iter().any(|c| c["check"] == needed && c["ok"] == true), "no {needed} in {report:#}");
    }
}

/// Issue 13's end to end: `models-fetch lock` pins the tiny real model from the Hub API (no
/// weights downloaded), `sync` publishes the locked entry, and the real huggingface_hub,
/// transformers and safetensors load it offline.
#[test]
fn the_tiny_real_model_locked_from_the_hub_api_then_synced_loads_offline() {
    let Some(python) = python() else { return };
    let site = Site::new();
    let (model_dir, _) = tiny_model(&python, site.dir(), 2);
    let commit = site.origin().publish_repo(REPO, &repo_of(&model_dir));
    let index = write(site.dir(), "index.json", "{\n  \"models\": []\n}\n");
    site.write_config();

    let mut lock = site.command(&["lock", REPO, "--id", ID, "--index", index.to_str().unwrap(), "--write"]);
    lock.args(SEED).args(FULL);
    let out = lock.output().expect("models-fetch lock runs");
    assert_eq!(out.status.code(), Some(0), "lock: {}", text(&out));
    site.assert_no_secret_in(&text(&out), "the output of lock");
    assert!(site.origin().requests_to(Route::Cdn).is_empty(), "lock downloaded LFS files");
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lock prints the entry");
    assert_eq!(entry["artifact"]["commit"], commit.id.as_str());

    site.set("deployed_models", vec![ID]);
    site.write_config();
    site.sync().assert_ok();
    let planned = site.planned(ID);
    let mut expected = expected_files(&commit);
    expected.as_object_mut().expect("files").remove(".gitattributes");
    let expect = write(site.dir(), "expect.json", &expected.to_string());
    let (ok, report, output) =
        check_offline(&python, &site.cache(), REPO, &commit.id, &planned.model_path, &expect);
    assert!(ok && report["ok"] == true, "check_offline.py failed:\n{report:#}\n{output}");
    assert_eq!(report["commit"], json!(commit.id));
}
