//! The tiny real model (`tests/models/make_tiny.py`: a BERT config, a `tokenizers` tokenizer,
//! two safetensors shards and their index, a nested `1_Pooling/config.json`, plus oddly named
//! files) published as a repository at a commit, indexed as a set pinned to it, and synced by
//! models-fetch; then the real huggingface_hub, transformers and safetensors load it offline
//! (`tests/models/check_offline.py`) from the Hub cache, by repo id and at the commit, and from
//! the store's folder `{store_dir}/{id}`.
//!
//! Needs the venv `.ci/test` installs (`$HF_PYTHON`, else `.ci/tools/venv/bin/python`); without
//! either the test says why and passes without checking anything.

use serde_json::json;

use crate::fixture::index::set_entry;
use crate::fixture::{Site, write};
use crate::hubfixture::{check_offline, expected_files, python, repo_of, tiny_model};

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
