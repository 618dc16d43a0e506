//! `models-fetch sync` against `file://` mirrors: publish, reuse without fetching, repair of
//! links, refusal of wrong bytes, the previous version kept, and one instance per cache.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::{models_fetch, temp_dir, text, write};

const AJNA_SHA: &str = "461b8c00cd2ed5f546a2dcb4d8670d74f75aa01902bab4c320ada14c5c6bd707";

/// A copy of the bundled example in a temp dir: index, mirror (real files named by sha256) and
/// a config whose Hub endpoint is unreachable, so only the mirror can serve.
struct Example {
    dir: tempfile::TempDir,
}

impl Example {
    fn new() -> Self {
        let dir = temp_dir();
        let mirror = dir.path().join("mirror");
        std::fs::create_dir(&mirror).unwrap();
        for entry in std::fs::read_dir("examples/mirror").unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), mirror.join(entry.file_name())).unwrap();
        }
        std::fs::copy("examples/index.json", dir.path().join("index.json")).unwrap();
        let example = Self { dir };
        example.config("");
        example
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self, extra: &str) -> PathBuf {
        write(
            self.dir.path(),
            "config.toml",
            &format!(
                "index = \"index.json\"\nstore_dir = \"store\"\ncache_dir = \"store/hf-cache\"\nmirrors = [\"file://mirror\"]\nmirrors_first = true\nendpoint = \"http://127.0.0.1:9\"\nmax_retries = 0\ndeployed_models = [\"ajna-insight-v2\", \"anahata-heart-v1\"]\n{extra}"
            ),
        )
    }

    fn sync(&self) -> (Option<i32>, String) {
        let config = self.path("config.toml");
        let output = models_fetch(&["sync", "--config", config.to_str().unwrap()]);
        (output.status.code(), text(&output))
    }

    fn published(&self, id: &str, file: &str) -> Vec<u8> {
        std::fs::read(self.path(&format!("store/{id}/{file}"))).unwrap()
    }
}

fn ajna_bytes() -> Vec<u8> {
    std::fs::read("examples/models/ajna-insight-v2.safetensors").unwrap()
}

#[test]
fn sync_publishes_every_model_and_then_fetches_nothing() {
    let example = Example::new();
    let (code, out) = example.sync();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2/2 models ready"), "{out}");
    assert_eq!(example.published("ajna-insight-v2", "ajna-insight-v2.safetensors"), ajna_bytes());
    let blob = example.path(&format!("store/hf-cache/models--example-org--ajna-insight/blobs/{AJNA_SHA}"));
    assert!(blob.is_file());
    let chakra = example.path("store/by-chakra/ajna/ajna-insight-v2/ajna-insight-v2.safetensors");
    assert_eq!(std::fs::read(chakra).unwrap(), ajna_bytes());

    // Without the mirror, a second run still succeeds: nothing is fetched.
    std::fs::remove_dir_all(example.path("mirror")).unwrap();
    let (code, out) = example.sync();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ajna-insight-v2: already published"), "{out}");
    assert!(!out.contains("fetching"), "{out}");
}

#[test]
fn missing_links_are_repaired_without_fetching() {
    let example = Example::new();
    assert_eq!(example.sync().0, Some(0));
    std::fs::remove_file(example.path("store/ajna-insight-v2/ajna-insight-v2.safetensors")).unwrap();
    std::fs::remove_file(example.path("store/by-chakra/ajna/ajna-insight-v2")).unwrap();
    std::fs::remove_dir_all(example.path("mirror")).unwrap();
    let (code, out) = example.sync();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(example.published("ajna-insight-v2", "ajna-insight-v2.safetensors"), ajna_bytes());
}

#[test]
fn a_changed_blob_is_hashed_again_and_replaced() {
    let example = Example::new();
    assert_eq!(example.sync().0, Some(0));
    let blob = example.path(&format!("store/hf-cache/models--example-org--ajna-insight/blobs/{AJNA_SHA}"));
    let mut bytes = ajna_bytes();
    bytes[100] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let (code, out) = example.sync();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ajna-insight-v2: published"), "re-fetched: {out}");
    assert_eq!(std::fs::read(&blob).unwrap(), ajna_bytes());
}

#[test]
fn wrong_bytes_are_never_published_and_the_previous_version_stays() {
    let example = Example::new();
    assert_eq!(example.sync().0, Some(0));
    // Version 2 of ajna: the index names new bytes; the mirror serves them with a flipped byte.
    let new_bytes: Vec<u8> = b"ajna v2 weights ".repeat(4096);
    let new_sha = sha256(&new_bytes);
    let mut corrupt = new_bytes.clone();
    corrupt[5000] ^= 1;
    std::fs::write(example.path(&format!("mirror/{new_sha}")), &corrupt).unwrap();
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(example.path("index.json")).unwrap()).unwrap();
    index["models"][0]["version"] = "2.1.0".into();
    index["models"][0]["artifact"]["sha256"] = new_sha.clone().into();
    index["models"][0]["artifact"]["sizeBytes"] = new_bytes.len().into();
    std::fs::write(example.path("index.json"), index.to_string()).unwrap();

    let (code, out) = example.sync();
    assert_eq!(code, Some(65), "{out}");
    assert!(out.contains("ajna-insight-v2: FAILED"), "{out}");
    assert!(out.contains(&format!("checksum mismatch: expected sha256 {new_sha}")), "{out}");
    assert!(out.contains("1 of 2 models failed"), "{out}");
    // The published name still holds the old, verified version; no blob of the new one exists.
    assert_eq!(example.published("ajna-insight-v2", "ajna-insight-v2.safetensors"), ajna_bytes());
    let blobs = example.path("store/hf-cache/models--example-org--ajna-insight/blobs");
    let names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [AJNA_SHA], "no new blob, no partial left: {names:?}");
}

#[test]
fn a_second_instance_on_the_same_cache_is_refused() {
    let example = Example::new();
    assert_eq!(example.sync().0, Some(0));
    let lock =
        std::fs::OpenOptions::new().write(true).open(example.path("store/.models-fetch/lock")).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(example.path("store/.models-fetch/lock"), "4242\n").unwrap();
    let (code, out) = example.sync();
    assert_eq!(code, Some(75), "{out}");
    assert!(out.contains("another models-fetch (pid 4242) is already using this cache"), "{out}");
    drop(lock);
    assert_eq!(example.sync().0, Some(0));
}

#[test]
fn reserved_ids_are_refused() {
    let example = Example::new();
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(example.path("index.json")).unwrap()).unwrap();
    index["models"][0]["id"] = "hf-cache".into();
    std::fs::write(example.path("index.json"), index.to_string()).unwrap();
    example.config("");
    let config =
        std::fs::read_to_string(example.path("config.toml")).unwrap().replace("ajna-insight-v2", "hf-cache");
    std::fs::write(example.path("config.toml"), config).unwrap();
    let (code, out) = example.sync();
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("Model 'hf-cache': the id names a folder models-fetch uses inside store_dir"),
        "{out}"
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
