//! The config file and what `plan` makes of it with an index: unknown keys, unknown ids, chakra
//! mismatches, stub entries, an empty deploy set, and the plan of the bundled example.

use std::path::Path;

use crate::util::{models_fetch, temp_dir, text, write};

/// Runs `plan --config` on a config in a temp dir next to a copy of the example index plus the
/// seed's stub entry.
fn plan(config: &str) -> (Option<i32>, String) {
    let dir = temp_dir();
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("examples/index.json").unwrap()).unwrap();
    let seed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("nix/index.json").unwrap()).unwrap();
    index["models"].as_array_mut().unwrap().push(seed["models"][0].clone());
    write(dir.path(), "index.json", &index.to_string());
    let config = write(dir.path(), "config.toml", config);
    let output = models_fetch(&["plan", "--config", config.to_str().unwrap()]);
    (output.status.code(), text(&output))
}

#[test]
fn unknown_key_is_named() {
    let (code, out) =
        plan("index = \"index.json\"\ndeployed_models = [\"ajna-insight-v2\"]\ncache_directory = \"/x\"\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("unknown field `cache_directory`"), "{out}");
    assert!(out.contains("config.toml"), "{out}");
}

#[test]
fn unknown_model_id_lists_known_ids() {
    let (code, out) = plan("index = \"index.json\"\ndeployed_models = [\"xyz\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("Model 'xyz' not found in index (known ids: ajna-insight-v2, anahata-heart-v1, muladhara-foundation-v1)"),
        "{out}"
    );
}

#[test]
fn chakra_key_must_be_a_chakra() {
    let (code, out) = plan("index = \"index.json\"\n[chakra_models]\nheart = [\"anahata-heart-v1\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("chakra_models.heart: 'heart' is not a chakra (one of: muladhara,"), "{out}");
}

#[test]
fn model_under_the_wrong_chakra_is_refused() {
    let (code, out) = plan("index = \"index.json\"\n[chakra_models]\najna = [\"anahata-heart-v1\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("Model 'anahata-heart-v1' is listed under chakra_models.ajna but its index entry says chakra 'anahata'"),
        "{out}"
    );
}

#[test]
fn stub_entry_is_refused_with_its_fields() {
    let (code, out) = plan("index = \"index.json\"\ndeployed_models = [\"muladhara-foundation-v1\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("Model 'muladhara-foundation-v1' is a stub entry and cannot be deployed"), "{out}");
    for field in
        ["dataset.id", "artifact.sha256 (is all zeros)", "artifact.sizeBytes (is 0)", "artifact.downloadUrl"]
    {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
}

#[test]
fn empty_deploy_set_is_an_error() {
    let (code, out) = plan("index = \"index.json\"\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("nothing to deploy"), "{out}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let (code, out) = plan(
        "index = \"index.json\"\ndeployed_models = [\"xyz\", \"muladhara-foundation-v1\"]\n[chakra_models]\najna = [\"anahata-heart-v1\"]\n",
    );
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("Model 'xyz' not found"), "{out}");
    assert!(out.contains("is a stub entry"), "{out}");
    assert!(out.contains("is listed under chakra_models.ajna"), "{out}");
}

#[test]
fn missing_config_file_is_a_config_error() {
    let output = models_fetch(&["plan", "--config", "/nonexistent/models-fetch.toml"]);
    assert_eq!(output.status.code(), Some(78), "{}", text(&output));
    assert!(text(&output).contains("/nonexistent/models-fetch.toml: cannot read the config"));
}

#[test]
fn invalid_index_named_by_config_fails_with_its_problems() {
    let dir = temp_dir();
    write(dir.path(), "index.json", r#"{ "models": [ { "id": "abc" } ] }"#);
    let config = write(dir.path(), "c.toml", "index = \"index.json\"\ndeployed_models = [\"abc\"]\n");
    let output = models_fetch(&["plan", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert!(text(&output).contains("index.json: /models/0: \"version\" is a required property [model abc]"));
}

#[test]
fn example_plan_names_sources_hashes_and_paths() {
    let output = models_fetch(&["plan", "--config", "examples/config.toml", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let items = plan["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // deployed_models first, then chakra_models.
    assert_eq!(items[0]["id"], "anahata-heart-v1");
    assert_eq!(items[0]["source"], "https://models.example.org/anahata/anahata-heart-v1.safetensors");
    assert_eq!(items[1]["id"], "ajna-insight-v2");
    assert_eq!(
        items[1]["source"],
        "https://huggingface.co/example-org/ajna-insight/resolve/main/ajna-insight-v2.safetensors"
    );
    assert_eq!(items[1]["sha256"], "461b8c00cd2ed5f546a2dcb4d8670d74f75aa01902bab4c320ada14c5c6bd707");
    assert_eq!(items[1]["size_bytes"], 12520);
    let store = items[1]["store_path"].as_str().unwrap();
    assert!(
        Path::new(store).ends_with("target/example/models/ajna-insight-v2/ajna-insight-v2.safetensors"),
        "{store}"
    );
    let blob = items[1]["blob_path"].as_str().unwrap();
    assert!(blob.ends_with("hf-cache/models--example-org--ajna-insight/blobs/461b8c00cd2ed5f546a2dcb4d8670d74f75aa01902bab4c320ada14c5c6bd707"), "{blob}");
}

#[test]
fn configured_endpoint_replaces_the_public_hub_in_download_urls() {
    let dir = temp_dir();
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("examples/index.json").unwrap()).unwrap();
    let artifact = &mut index["models"][0]["artifact"];
    artifact.as_object_mut().unwrap().remove("repo");
    artifact["downloadUrl"] = "https://huggingface.co/org/name/resolve/v1.0/sub/ajna.safetensors".into();
    write(dir.path(), "index.json", &index.to_string());
    let config = write(
        dir.path(),
        "c.toml",
        "index = \"index.json\"\nendpoint = \"http://127.0.0.1:9/hub/\"\ndeployed_models = [\"ajna-insight-v2\"]\n",
    );
    let output = models_fetch(&["plan", "--config", config.to_str().unwrap(), "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        plan["items"][0]["source"],
        "http://127.0.0.1:9/hub/org/name/resolve/v1.0/sub/ajna.safetensors"
    );
}
