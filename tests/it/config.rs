//! The config file and what `plan` makes of it with an index: unknown keys, unknown ids, chakra
//! mismatches, stub entries, an empty deploy set, and the plan of the bundled example.

use crate::fixture::{Site, models_fetch, plan::plan, root, text};

/// The example index's JSON.
fn example_index() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("examples/index.json")).unwrap()).unwrap()
}

/// Runs `models-fetch plan` in a site with `config` (as it is) next to a copy of the example
/// index plus the seed's stub entry: exit status and output.
fn plan_of(config: &str) -> (Option<i32>, String) {
    let site = Site::offline();
    let mut index = example_index();
    let seed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("nix/index.json")).unwrap()).unwrap();
    index["models"].as_array_mut().unwrap().push(seed["models"][0].clone());
    site.write_index_json(&index);
    site.write("config.toml", config.as_bytes());
    let output = site.command(&["plan"]).output().expect("models-fetch plan runs");
    (output.status.code(), text(&output))
}

#[test]
fn unknown_key_is_named() {
    let (code, out) = plan_of(
        "index = \"index.json\"\ndeployed_models = [\"ajna-insight-v2\"]\ncache_directory = \"/x\"\n",
    );
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("unknown field `cache_directory`"), "{out}");
    assert!(out.contains("config.toml"), "{out}");
}

#[test]
fn unknown_model_id_lists_known_ids() {
    let (code, out) = plan_of("index = \"index.json\"\ndeployed_models = [\"xyz\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("Model 'xyz' not found in index (known ids: ajna-insight-v2, anahata-heart-v1, muladhara-foundation-v1)"),
        "{out}"
    );
}

#[test]
fn chakra_key_must_be_a_chakra() {
    let (code, out) = plan_of("index = \"index.json\"\n[chakra_models]\nheart = [\"anahata-heart-v1\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("chakra_models.heart: 'heart' is not a chakra (one of: muladhara,"), "{out}");
}

#[test]
fn model_under_the_wrong_chakra_is_refused() {
    let (code, out) = plan_of("index = \"index.json\"\n[chakra_models]\najna = [\"anahata-heart-v1\"]\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("Model 'anahata-heart-v1' is listed under chakra_models.ajna but its index entry says chakra 'anahata'"),
        "{out}"
    );
}

#[test]
fn stub_entry_is_refused_with_its_fields() {
    let (code, out) = plan_of("index = \"index.json\"\ndeployed_models = [\"muladhara-foundation-v1\"]\n");
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
    let (code, out) = plan_of("index = \"index.json\"\n");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("nothing to deploy"), "{out}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let (code, out) = plan_of(
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
    let site = Site::offline();
    site.write("index.json", br#"{ "models": [ { "id": "abc" } ] }"#);
    site.write("config.toml", b"index = \"index.json\"\ndeployed_models = [\"abc\"]\n");
    let output = site.command(&["plan"]).output().expect("models-fetch plan runs");
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert!(text(&output).contains("index.json: /models/0: \"version\" is a required property [model abc]"));
}

#[test]
fn example_plan_names_sources_hashes_and_paths() {
    let items = plan(&root().join("examples/config.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(items.len(), 2);
    // deployed_models first, then chakra_models.
    assert_eq!(items[0].id, "anahata-heart-v1");
    assert_eq!(items[0].source, "https://models.example.org/anahata/anahata-heart-v1.safetensors");
    assert_eq!(items[1].id, "ajna-insight-v2");
    assert_eq!(
        items[1].source,
        "https://huggingface.co/example-org/ajna-insight/resolve/main/ajna-insight-v2.safetensors"
    );
    assert_eq!(items[1].sha256, "461b8c00cd2ed5f546a2dcb4d8670d74f75aa01902bab4c320ada14c5c6bd707");
    assert_eq!(items[1].size, 12520);
    let store = &items[1].store;
    assert!(
        store.ends_with("target/example/models/ajna-insight-v2/ajna-insight-v2.safetensors"),
        "{}",
        store.display()
    );
    let blob = &items[1].blob;
    assert!(blob.ends_with("hf-cache/models--example-org--ajna-insight/blobs/461b8c00cd2ed5f546a2dcb4d8670d74f75aa01902bab4c320ada14c5c6bd707"), "{}", blob.display());
}

#[test]
fn configured_endpoint_replaces_the_public_hub_in_download_urls() {
    let site = Site::offline();
    let mut index = example_index();
    let artifact = &mut index["models"][0]["artifact"];
    artifact.as_object_mut().unwrap().remove("repo");
    artifact["downloadUrl"] = "https://huggingface.co/org/name/resolve/v1.0/sub/ajna.safetensors".into();
    site.write_index_json(&index);
    site.set("endpoint", "http://127.0.0.1:9/hub/");
    site.set("deployed_models", vec!["ajna-insight-v2"]);
    site.write_config();
    assert_eq!(site.plan()[0].source, "http://127.0.0.1:9/hub/org/name/resolve/v1.0/sub/ajna.safetensors");
}
