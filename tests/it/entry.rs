//! `models-fetch entry`: the entry it prints validates, its hash matches `sha256sum`, and
//! `--index --write` adds or replaces the entry without touching the rest of the index; for a
//! folder, every file is listed with its hash, `.git` skipped and links followed.

use std::process::Command;

use crate::fixture::{FULL, SEED, models_fetch, temp_dir, text, write};

/// Every metadata flag (the fixture's `SEED` and `FULL`) and a repository.
fn required() -> Vec<&'static str> {
    [SEED, FULL, &["--repo", "org/soma-test"]].concat()
}

fn sha256sum(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

#[test]
fn generated_entry_validates_and_matches_sha256sum() {
    let dir = temp_dir();
    let model = dir.path().join("soma-test-v1.gguf");
    std::fs::write(&model, (0..300_000u32).flat_map(u32::to_le_bytes).collect::<Vec<u8>>()).unwrap();
    let mut args = vec!["entry", model.to_str().unwrap(), "--id", "soma-test-v1"];
    args.extend(required());
    let output = models_fetch(&args);
    assert!(output.status.success(), "{}", text(&output));
    let entry: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(entry["artifact"]["sha256"], sha256sum(&model));
    assert_eq!(entry["artifact"]["sizeBytes"], 1_200_000);
    assert_eq!(entry["artifact"]["filename"], "soma-test-v1.gguf");
    assert_eq!(entry["artifact"]["format"], "gguf");
    assert_eq!(entry["frequencyHz"], 852);

    let index = write(dir.path(), "index.json", &serde_json::json!({ "models": [entry] }).to_string());
    let check = models_fetch(&["validate", "--deny-stubs", index.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

#[test]
fn missing_required_values_are_reported_not_printed() {
    let dir = temp_dir();
    let model = write(dir.path(), "m.bin", "weights");
    let output = models_fetch(&["entry", model.to_str().unwrap(), "--id", "new-model", "--version", "1.0.0"]);
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    let out = text(&output);
    assert!(out.contains("\"chakra\" is a required property"), "{out}");
    assert!(out.contains("models-fetch entry --help"), "{out}");
    assert!(output.stdout.is_empty(), "an invalid entry must not be printed");
}

#[test]
fn write_replaces_the_entry_in_place_and_keeps_the_rest() {
    let dir = temp_dir();
    let index = dir.path().join("index.json");
    std::fs::copy("examples/index.json", &index).unwrap();
    let before: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let model = write(dir.path(), "ajna-insight-v2.safetensors", "retrained weights");

    let output = models_fetch(&[
        "entry",
        model.to_str().unwrap(),
        "--id",
        "ajna-insight-v2",
        "--version",
        "2.1.0",
        "--index",
        index.to_str().unwrap(),
        "--write",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let (old, new) = (&before["models"][0], &after["models"][0]);
    assert_eq!(new["id"], "ajna-insight-v2");
    assert_eq!(new["version"], "2.1.0");
    assert_eq!(new["artifact"]["sha256"], sha256sum(&model));
    assert_eq!(new["artifact"]["sizeBytes"], 17);
    assert_eq!(new["artifact"]["repo"], old["artifact"]["repo"], "fields not given are kept");
    assert_eq!(new["provenance"], old["provenance"]);
    assert_eq!(after["models"][1], before["models"][1], "other entries untouched");
    assert_eq!(after["$schema"], before["$schema"]);
    assert_eq!(after["models"].as_array().unwrap().len(), 2);

    // A new id is appended.
    let mut args = vec![
        "entry",
        model.to_str().unwrap(),
        "--id",
        "soma-test-v1",
        "--index",
        index.to_str().unwrap(),
        "--write",
    ];
    args.extend(required());
    let output = models_fetch(&args);
    assert!(output.status.success(), "{}", text(&output));
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    assert_eq!(after["models"][2]["id"], "soma-test-v1");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".index.json.") && n != ".index.json.lock")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn write_refuses_to_break_the_index() {
    let dir = temp_dir();
    let index = dir.path().join("index.json");
    std::fs::copy("examples/index.json", &index).unwrap();
    let before = std::fs::read(&index).unwrap();
    let model = write(dir.path(), "m.bin", "x");
    let output = models_fetch(&[
        "entry",
        model.to_str().unwrap(),
        "--id",
        "ajna-insight-v2",
        "--chakra",
        "heart",
        "--index",
        index.to_str().unwrap(),
        "--write",
    ]);
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert!(text(&output).contains("\"heart\" is not one of"), "{}", text(&output));
    assert_eq!(std::fs::read(&index).unwrap(), before, "a failed write leaves the index as it was");
}

/// Two CI jobs adding entries to one index at once: every successful write is in the result.
/// Without the index lock, about half the entries were silently lost.
#[test]
fn parallel_writes_lose_no_entry() {
    const PER_STREAM: usize = 15;
    let dir = temp_dir();
    let index = dir.path().join("index.json");
    std::fs::copy("examples/index.json", &index).unwrap();
    let before = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&index).unwrap())
        .unwrap()["models"]
        .as_array()
        .unwrap()
        .len();
    let model = write(dir.path(), "m.bin", "weights");
    let streams: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|stream| {
            let (index, model) = (index.clone(), model.clone());
            std::thread::spawn(move || {
                for i in 0..PER_STREAM {
                    let id = format!("parallel-{stream}-{i}");
                    let mut args = vec![
                        "entry",
                        model.to_str().unwrap(),
                        "--id",
                        &id,
                        "--index",
                        index.to_str().unwrap(),
                        "--write",
                    ];
                    args.extend(required());
                    let output = models_fetch(&args);
                    assert!(output.status.success(), "{id}: {}", text(&output));
                }
            })
        })
        .collect();
    for stream in streams {
        stream.join().unwrap();
    }
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let ids: std::collections::BTreeSet<&str> =
        after["models"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    for stream in ["a", "b"] {
        for i in 0..PER_STREAM {
            assert!(
                ids.contains(format!("parallel-{stream}-{i}").as_str()),
                "parallel-{stream}-{i} was lost"
            );
        }
    }
    assert_eq!(ids.len(), before + 2 * PER_STREAM);
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A local snapshot of a sentence-transformers-like repository with sharded safetensors.
fn model_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("snapshot");
    for (path, content) in [
        ("config.json", "{\"model_type\": \"bert\"}"),
        ("1_Pooling/config.json", "{\"pooling_mode_mean_tokens\": true}"),
        ("model-00001-of-00002.safetensors", "first shard, larger than the second"),
        ("model-00002-of-00002.safetensors", "second shard"),
        ("model.safetensors.index.json", "{\"weight_map\": {}}"),
        ("tokenizer.json", "{}"),
        (".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text"),
        ("dir with space/ü+=#.txt", "unusual name"),
        (".git/HEAD", "ref: refs/heads/main"),
        (".git/objects/ab/cdef", "git object"),
        (".cache/huggingface/download/config.json.metadata", "local-dir metadata"),
    ] {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    root
}

#[test]
fn a_folder_is_listed_file_by_file_with_its_primary_file() {
    let dir = temp_dir();
    let folder = model_folder(dir.path());
    let mut args = vec!["entry", folder.to_str().unwrap(), "--id", "soma-set-v1", "--commit", COMMIT];
    args.extend(required());
    let output = models_fetch(&args);
    assert!(output.status.success(), "{}", text(&output));
    let entry: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let artifact = &entry["artifact"];
    assert_eq!(artifact["commit"], COMMIT);
    assert_eq!(artifact["filename"], "model.safetensors.index.json");
    assert_eq!(artifact["format"], "safetensors");
    assert!(artifact.get("path").is_none(), "the primary file is found at filename: {artifact}");
    let index_file = folder.join("model.safetensors.index.json");
    assert_eq!(artifact["sha256"], sha256sum(&index_file));
    assert_eq!(artifact["sizeBytes"], std::fs::metadata(&index_file).unwrap().len());
    let files = artifact["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            ".gitattributes",
            "1_Pooling/config.json",
            "config.json",
            "dir with space/ü+=#.txt",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
        ],
        "sorted by path; .git and .cache/huggingface skipped"
    );
    for file in files {
        let on_disk = folder.join(file["path"].as_str().unwrap());
        assert_eq!(file["sha256"], sha256sum(&on_disk), "{file}");
        assert_eq!(file["sizeBytes"], std::fs::metadata(&on_disk).unwrap().len(), "{file}");
        assert!(file.get("gitOid").is_none());
    }

    let index = write(dir.path(), "index.json", &serde_json::json!({ "models": [entry] }).to_string());
    let check = models_fetch(&["validate", "--deny-stubs", index.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

/// A Hub cache snapshot is made of relative links into `blobs/`: the files behind them are
/// hashed, under the links' names. `--path` names the primary file instead of the rule.
#[test]
fn a_hub_cache_snapshot_is_read_through_its_links_and_path_picks_the_primary() {
    let dir = temp_dir();
    let repo = dir.path().join("models--org--name");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(snapshot.join("sub")).unwrap();
    std::fs::write(repo.join("blobs/aaa"), "q4 weights").unwrap();
    std::fs::write(repo.join("blobs/bbb"), "q8 weights, larger").unwrap();
    std::os::unix::fs::symlink("../../blobs/aaa", snapshot.join("q4.gguf")).unwrap();
    std::os::unix::fs::symlink("../../../blobs/bbb", snapshot.join("sub/q8.gguf")).unwrap();

    let mut args = vec![
        "entry",
        snapshot.to_str().unwrap(),
        "--id",
        "soma-gguf-v1",
        "--commit",
        COMMIT,
        "--path",
        "sub/q8.gguf",
        "--filename",
        "q8.gguf",
    ];
    args.extend(required());
    let output = models_fetch(&args);
    assert!(output.status.success(), "{}", text(&output));
    let entry: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let artifact = &entry["artifact"];
    assert_eq!(artifact["path"], "sub/q8.gguf");
    assert_eq!(artifact["filename"], "q8.gguf");
    assert_eq!(artifact["sha256"], sha256sum(&repo.join("blobs/bbb")));
    let paths: Vec<&str> =
        artifact["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["q4.gguf", "sub/q8.gguf"]);

    // Without --path the rule picks the GGUF in the top folder.
    let mut args = vec!["entry", snapshot.to_str().unwrap(), "--id", "soma-gguf-v1", "--commit", COMMIT];
    args.extend(required());
    let output = models_fetch(&args);
    assert!(output.status.success(), "{}", text(&output));
    let entry: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(entry["artifact"]["filename"], "q4.gguf");
}

#[test]
fn a_folder_needs_a_commit_and_an_existing_path() {
    let dir = temp_dir();
    let folder = model_folder(dir.path());
    let mut args = vec!["entry", folder.to_str().unwrap(), "--id", "soma-set-v1"];
    args.extend(required());
    let output = models_fetch(&args);
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert!(text(&output).contains("is a folder: pass --commit SHA"), "{}", text(&output));

    let mut args = vec![
        "entry",
        folder.to_str().unwrap(),
        "--id",
        "soma-set-v1",
        "--commit",
        COMMIT,
        "--path",
        "nope.bin",
    ];
    args.extend(required());
    let output = models_fetch(&args);
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert!(text(&output).contains("--path \"nope.bin\" is not a file under"), "{}", text(&output));

    // A link to nowhere is an error, not a silently shorter list.
    std::os::unix::fs::symlink("missing", folder.join("dangling.bin")).unwrap();
    let mut args = vec!["entry", folder.to_str().unwrap(), "--id", "soma-set-v1", "--commit", COMMIT];
    args.extend(required());
    let output = models_fetch(&args);
    assert_eq!(output.status.code(), Some(66), "{}", text(&output));
    assert!(text(&output).contains("dangling.bin"), "{}", text(&output));
}

/// Re-listing a folder into an index replaces the files and keeps the other fields; the
/// written index holds the set.
#[test]
fn write_replaces_the_file_set_of_an_entry() {
    let dir = temp_dir();
    let index = dir.path().join("index.json");
    std::fs::copy("examples/index.json", &index).unwrap();
    let folder = model_folder(dir.path());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "entry",
            folder.to_str().unwrap(),
            "--id",
            "ajna-insight-v2",
            "--commit",
            COMMIT,
            "--index",
            index.to_str().unwrap(),
            "--write",
        ];
        args.extend_from_slice(extra);
        let output = models_fetch(&args);
        assert!(output.status.success(), "{}", text(&output));
        assert!(text(&output).contains(" files, primary "), "{}", text(&output));
        let after: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
        after["models"][0].clone()
    };
    let first = run(&[]);
    assert_eq!(first["artifact"]["repo"], "example-org/ajna-insight", "fields not given are kept");
    assert_eq!(first["artifact"]["files"].as_array().unwrap().len(), 8);
    std::fs::remove_file(folder.join("tokenizer.json")).unwrap();
    std::fs::remove_dir_all(folder.join("dir with space")).unwrap();
    let second = run(&["--revision", "v2"]);
    assert_eq!(second["artifact"]["files"].as_array().unwrap().len(), 6, "{second}");
    assert_eq!(second["artifact"]["revision"], "v2");
    let check = models_fetch(&["validate", index.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}
