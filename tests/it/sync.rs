//! `models-fetch sync` against `file://` mirrors: publish, reuse without fetching, repair of
//! links, refusal of wrong bytes, the previous version kept, and one instance per cache.

use serde_json::Value;

use crate::fixture::{Planned, Site, root, sha256_hex};

const AJNA: &str = "ajna-insight-v2";

/// A copy of the bundled example in a site: index, mirror (real files named by sha256) and a
/// config whose Hub endpoint is unreachable, so only the mirror can serve.
fn example() -> Site {
    let site = Site::offline();
    for entry in std::fs::read_dir(root().join("examples/mirror")).unwrap() {
        let entry = entry.unwrap();
        site.write(
            &format!("mirror/{}", entry.file_name().to_str().unwrap()),
            &std::fs::read(entry.path()).unwrap(),
        );
    }
    site.write("index.json", &std::fs::read(root().join("examples/index.json")).unwrap());
    for key in ["token_file", "connect_timeout", "stall_timeout", "retry_base_delay", "retry_max_time"] {
        site.unset(key);
    }
    site.set("store_dir", "store");
    site.set("cache_dir", "store/hf-cache");
    site.set("mirrors", vec!["file://mirror"]);
    site.set("mirrors_first", true);
    site.set("max_retries", 0);
    site.set("deployed_models", vec![AJNA, "anahata-heart-v1"]);
    site.write_config();
    site
}

/// Where the example publishes ajna-insight-v2.
fn ajna(site: &Site) -> Planned {
    site.planned(AJNA)
}

/// `models-fetch sync` of the site: its exit status and output.
fn sync(site: &Site) -> (Option<i32>, String) {
    let run = site.sync();
    (run.code, run.out)
}

fn ajna_bytes() -> Vec<u8> {
    std::fs::read(root().join("examples/models/ajna-insight-v2.safetensors")).unwrap()
}

#[test]
fn sync_publishes_every_model_and_then_fetches_nothing() {
    let site = example();
    let (code, out) = sync(&site);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2/2 models ready"), "{out}");
    assert_eq!(std::fs::read(ajna(&site).store).unwrap(), ajna_bytes());
    let blob = ajna(&site).blob;
    assert!(blob.is_file());
    let chakra = ajna(&site).by_chakra().join("ajna-insight-v2.safetensors");
    assert_eq!(std::fs::read(chakra).unwrap(), ajna_bytes());

    // Without the mirror, a second run still succeeds: nothing is fetched.
    std::fs::remove_dir_all(site.path("mirror")).unwrap();
    let (code, out) = sync(&site);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ajna-insight-v2: already published"), "{out}");
    assert!(!out.contains("fetching"), "{out}");
}

#[test]
fn missing_links_are_repaired_without_fetching() {
    let site = example();
    assert_eq!(sync(&site).0, Some(0));
    std::fs::remove_file(ajna(&site).store).unwrap();
    std::fs::remove_file(ajna(&site).by_chakra()).unwrap();
    std::fs::remove_dir_all(site.path("mirror")).unwrap();
    let (code, out) = sync(&site);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(ajna(&site).store).unwrap(), ajna_bytes());
}

#[test]
fn a_changed_blob_is_hashed_again_and_replaced() {
    let site = example();
    assert_eq!(sync(&site).0, Some(0));
    let blob = ajna(&site).blob;
    let mut bytes = ajna_bytes();
    bytes[100] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let (code, out) = sync(&site);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ajna-insight-v2: published"), "re-fetched: {out}");
    assert_eq!(std::fs::read(&blob).unwrap(), ajna_bytes());
}

#[test]
fn wrong_bytes_are_never_published_and_the_previous_version_stays() {
    let site = example();
    assert_eq!(sync(&site).0, Some(0));
    // Version 2 of ajna: the index names new bytes; the mirror serves them with a flipped byte.
    let new_bytes: Vec<u8> = b"ajna v2 weights ".repeat(4096);
    let new_sha = sha256_hex(&new_bytes);
    let mut corrupt = new_bytes.clone();
    corrupt[5000] ^= 1;
    std::fs::write(site.path(&format!("mirror/{new_sha}")), &corrupt).unwrap();
    let mut index: Value = serde_json::from_slice(&std::fs::read(site.path("index.json")).unwrap()).unwrap();
    index["models"][0]["version"] = "2.1.0".into();
    index["models"][0]["artifact"]["sha256"] = new_sha.clone().into();
    index["models"][0]["artifact"]["sizeBytes"] = new_bytes.len().into();
    std::fs::write(site.path("index.json"), index.to_string()).unwrap();

    let (code, out) = sync(&site);
    assert_eq!(code, Some(65), "{out}");
    assert!(out.contains("ajna-insight-v2: FAILED"), "{out}");
    assert!(out.contains(&format!("checksum mismatch: expected sha256 {new_sha}")), "{out}");
    assert!(out.contains("1 of 2 models failed"), "{out}");
    // The published name still holds the old, verified version; no blob of the new one exists.
    assert_eq!(std::fs::read(ajna(&site).store).unwrap(), ajna_bytes());
    let blobs = ajna(&site).blob.parent().unwrap().to_owned();
    let names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [ajna(&site).sha256], "no new blob, no partial left: {names:?}");
}

#[test]
fn a_second_instance_on_the_same_cache_is_refused() {
    let site = example();
    assert_eq!(sync(&site).0, Some(0));
    let path = ajna(&site).lock();
    let lock = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(&path, "4242\n").unwrap();
    let (code, out) = sync(&site);
    assert_eq!(code, Some(75), "{out}");
    assert!(out.contains("another models-fetch (pid 4242) is already using this cache"), "{out}");
    drop(lock);
    assert_eq!(sync(&site).0, Some(0));
}

#[test]
fn reserved_ids_are_refused() {
    let site = example();
    let mut index: Value = serde_json::from_slice(&std::fs::read(site.path("index.json")).unwrap()).unwrap();
    index["models"][0]["id"] = "hf-cache".into();
    std::fs::write(site.path("index.json"), index.to_string()).unwrap();
    site.set("deployed_models", vec!["hf-cache", "anahata-heart-v1"]);
    site.write_config();
    let (code, out) = sync(&site);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("Model 'hf-cache': the id names a folder models-fetch uses inside store_dir"),
        "{out}"
    );
}
