//! Checks of an index that a JSON Schema cannot state: unique ids, placeholder (stub) values,
//! file paths that would escape the directory they are published in, and the consistency of a
//! model's file list (`artifact.files`: unique paths, no file inside another, the primary file
//! among them with its sha256 and size; a 40-hex `revision` equal to `commit`).
//!
//! They run on the raw JSON document, so they still report what they can when the schema check
//! failed too, and every problem names its JSON pointer.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{Problem, StubField};

/// Prefixes that mark a placeholder string, as the seed's index uses them.
const STUB_PREFIXES: [&str; 2] = ["STUB:", "REVISIT:"];
/// A marker that makes any string a placeholder wherever it appears (the seed's stub
/// `downloadUrl` carries it in the middle: `https://huggingface.co/TODO-STUB-ORG/...`).
const STUB_MARKER: &str = "TODO-STUB";
const ALL_ZERO_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest file path and path segment accepted (Linux's PATH_MAX and NAME_MAX).
const MAX_PATH: usize = 4096;
const MAX_SEGMENT: usize = 255;

/// Why a relative path from the index cannot be used as a file name beneath a directory.
pub fn unsafe_path_reason(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    if path.len() > MAX_PATH {
        return Some("is longer than 4096 bytes");
    }
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    if path.contains('\\') {
        return Some("contains a backslash");
    }
    if path.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    if path.starts_with('/') {
        return Some("is absolute");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Some("has an empty segment (\"//\" or a trailing \"/\")"),
            "." => return Some("has a \".\" segment"),
            ".." => return Some("has a \"..\" segment"),
            s if s.len() > MAX_SEGMENT => return Some("has a segment longer than 255 bytes"),
            _ => {}
        }
    }
    None
}

/// Problems that make the index invalid: duplicate ids and unsafe artifact paths.
pub(crate) fn problems(document: &Value) -> Vec<Problem> {
    let mut found = Vec::new();
    let Some(models) = document.get("models").and_then(Value::as_array) else {
        return found;
    };
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, model) in models.iter().enumerate() {
        if let Some(id) = model.get("id").and_then(Value::as_str) {
            if let Some(first) = first_seen.get(id) {
                found.push(Problem {
                    pointer: format!("/models/{i}/id"),
                    message: format!("duplicate id \"{id}\" (first used by /models/{first})"),
                });
            } else {
                first_seen.insert(id, i);
            }
        }
        for field in ["filename", "path", "revision"] {
            let Some(value) = model.pointer(&format!("/artifact/{field}")).and_then(Value::as_str) else {
                continue;
            };
            if let Some(problem) = unsafe_path(format!("/models/{i}/artifact/{field}"), value) {
                found.push(problem);
            }
        }
        if let Some(artifact) = model.get("artifact") {
            found.extend(file_set_problems(&format!("/models/{i}/artifact"), artifact));
        }
    }
    found
}

fn unsafe_path(pointer: String, value: &str) -> Option<Problem> {
    let reason = unsafe_path_reason(value)?;
    Some(Problem {
        pointer,
        message: format!(
            "{} {reason}; it must be a relative path of plain names separated by \"/\"",
            Value::String(value.to_owned())
        ),
    })
}

/// Whether `s` is a full git commit id (40 lowercase hex digits).
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The rules of `artifact.files` and `artifact.commit` a schema cannot state; `at` is the
/// artifact's pointer. Values of the wrong type are left to the schema's report.
fn file_set_problems(at: &str, artifact: &Value) -> Vec<Problem> {
    let mut found = Vec::new();
    let str_at = |key: &str| artifact.get(key).and_then(Value::as_str);
    if let (Some(revision), Some(commit)) = (str_at("revision"), str_at("commit"))
        && is_commit(revision)
        && revision != commit
    {
        found.push(Problem {
            pointer: format!("{at}/revision"),
            message: format!(
                "{} is a commit other than artifact.commit {}; give the branch or tag whose \
                 ref should point at the commit (default main), or the same commit",
                Value::String(revision.to_owned()),
                Value::String(commit.to_owned())
            ),
        });
    }
    let Some(files) = artifact.get("files").and_then(Value::as_array) else {
        return found;
    };
    let paths: Vec<Option<&str>> = files.iter().map(|f| f.get("path").and_then(Value::as_str)).collect();
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut safe = HashSet::new();
    for (j, path) in paths.iter().enumerate() {
        let Some(path) = *path else { continue };
        if let Some(problem) = unsafe_path(format!("{at}/files/{j}/path"), path) {
            found.push(problem);
            continue;
        }
        if let Some(first) = first_seen.get(path) {
            found.push(Problem {
                pointer: format!("{at}/files/{j}/path"),
                message: format!("duplicate path (first listed at {at}/files/{first})"),
            });
            continue;
        }
        first_seen.insert(path, j);
        safe.insert(j);
    }
    // A file cannot also be a folder of another file ("a" and "a/b").
    for (j, path) in paths.iter().enumerate() {
        let Some(path) = path.filter(|_| safe.contains(&j)) else { continue };
        let folders = path.match_indices('/').map(|(end, _)| &path[..end]);
        if let Some((folder, k)) = folders.filter_map(|f| first_seen.get(f).map(|k| (f, *k))).next() {
            found.push(Problem {
                pointer: format!("{at}/files/{j}/path"),
                message: format!(
                    "lies in the folder {}, which {at}/files/{k} lists as a file",
                    Value::String(folder.to_owned())
                ),
            });
        }
    }
    // The primary file is one of the files, with the same content.
    let Some(primary) = str_at("path").or_else(|| str_at("filename")) else {
        return found;
    };
    let Some(&j) = first_seen.get(primary) else {
        if unsafe_path_reason(primary).is_none() {
            found.push(Problem {
                pointer: format!("{at}/files"),
                message: format!(
                    "does not list the primary file {} (artifact.path, else artifact.filename); \
                     every file of the model must be listed, the primary one too",
                    Value::String(primary.to_owned())
                ),
            });
        }
        return found;
    };
    let file = &files[j];
    if let (Some(listed), Some(primary)) = (file.get("sha256").and_then(Value::as_str), str_at("sha256"))
        && listed != primary
    {
        found.push(Problem {
            pointer: format!("{at}/files/{j}/sha256"),
            message: format!(
                "{} differs from artifact.sha256 {} of the primary file",
                Value::String(listed.to_owned()),
                Value::String(primary.to_owned())
            ),
        });
    }
    // Whole numbers may be written as 3.0; compare exactly where both are integers.
    let size = |v: &Value| v.get("sizeBytes").filter(|n| n.is_number()).cloned();
    if let (Some(listed), Some(primary)) = (size(file), size(artifact)) {
        let same = match (listed.as_u64(), primary.as_u64()) {
            (Some(a), Some(b)) => a == b,
            _ => listed.as_f64() == primary.as_f64(),
        };
        if !same {
            found.push(Problem {
                pointer: format!("{at}/files/{j}/sizeBytes"),
                message: format!(
                    "{} differs from artifact.sizeBytes {} of the primary file",
                    file["sizeBytes"], artifact["sizeBytes"]
                ),
            });
        }
    }
    found
}

/// Placeholder values in one entry, with pointers relative to the entry (`/artifact/sha256`).
pub(crate) fn stub_fields(entry: &Value) -> Vec<StubField> {
    let mut found = Vec::new();
    collect_stubs(entry, &mut String::new(), &mut found);
    found
}

/// `/artifact/sha256` or `/artifact/files/N/sha256`: the fields whose all-zero value is a
/// placeholder (no content hashes to it).
fn is_sha256_field(pointer: &str) -> bool {
    pointer == "/artifact/sha256"
        || pointer
            .strip_prefix("/artifact/files/")
            .and_then(|rest| rest.strip_suffix("/sha256"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn collect_stubs(value: &Value, pointer: &mut String, found: &mut Vec<StubField>) {
    let reason = match value {
        Value::String(s) if s.contains(STUB_MARKER) => Some(format!("contains {STUB_MARKER}")),
        Value::String(s) => {
            STUB_PREFIXES.iter().find(|p| s.starts_with(*p)).map(|p| format!("starts with {p}"))
        }
        Value::Number(n) if pointer == "/artifact/sizeBytes" && n.as_f64() == Some(0.0) => {
            Some("is 0".to_owned())
        }
        _ => None,
    };
    let reason = reason.or_else(|| {
        (is_sha256_field(pointer) && value.as_str() == Some(ALL_ZERO_SHA256))
            .then(|| "is all zeros".to_owned())
    });
    if let Some(reason) = reason {
        found.push(StubField { pointer: pointer.clone(), reason });
        return;
    }
    let len = pointer.len();
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                collect_stubs(child, pointer, found);
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointer.push_str(&format!("/{i}"));
                collect_stubs(child, pointer, found);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unsafe_paths_are_named() {
        for (path, reason) in [
            ("", "is empty"),
            ("/etc/passwd", "is absolute"),
            ("a/../b", "has a \"..\" segment"),
            ("..", "has a \"..\" segment"),
            ("a//b", "has an empty segment (\"//\" or a trailing \"/\")"),
            ("a/", "has an empty segment (\"//\" or a trailing \"/\")"),
            ("./a", "has a \".\" segment"),
            ("a\\b", "contains a backslash"),
            ("a\0b", "contains a NUL byte"),
            ("a\nb", "contains a control character"),
        ] {
            assert_eq!(unsafe_path_reason(path), Some(reason), "{path:?}");
        }
        assert_eq!(unsafe_path_reason(&"x".repeat(256)), Some("has a segment longer than 255 bytes"));
        for ok in ["model.safetensors", "sub/dir/model.gguf", "refs/pr/1", "a..b", "ünïcode"] {
            assert_eq!(unsafe_path_reason(ok), None, "{ok:?}");
        }
    }

    #[test]
    fn duplicate_ids_point_at_the_second_use() {
        let doc = json!({ "models": [ { "id": "abc" }, { "id": "def" }, { "id": "abc" } ] });
        let found = problems(&doc);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pointer, "/models/2/id");
        assert!(found[0].message.contains("/models/0"));
    }

    fn set_doc(files: serde_json::Value) -> Value {
        json!({ "models": [ { "id": "abc", "artifact": {
            "filename": "model.gguf", "sha256": "aa".repeat(32), "sizeBytes": 7,
            "commit": "ab".repeat(20), "files": files
        } } ] })
    }

    fn file(path: &str, sha: &str, size: u64) -> Value {
        json!({ "path": path, "sha256": sha.repeat(32), "sizeBytes": size })
    }

    fn found(doc: &Value) -> Vec<(String, String)> {
        problems(doc).into_iter().map(|p| (p.pointer, p.message)).collect()
    }

    #[test]
    fn a_consistent_file_set_has_no_problems() {
        let doc =
            set_doc(json!([file("model.gguf", "aa", 7), file("a/b/c.json", "bb", 1), file("a/d", "cc", 0)]));
        assert_eq!(found(&doc), []);
    }

    #[test]
    fn file_set_paths_are_safe_unique_and_no_file_is_a_folder() {
        let doc = set_doc(json!([
            file("model.gguf", "aa", 7),
            file("a/../x", "bb", 1),
            file("model.gguf", "bb", 1),
            file("model.gguf/inner", "cc", 1),
        ]));
        let pointers: Vec<String> = found(&doc).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            pointers,
            [
                "/models/0/artifact/files/1/path",
                "/models/0/artifact/files/2/path",
                "/models/0/artifact/files/3/path"
            ]
        );
        let messages: Vec<String> = found(&doc).into_iter().map(|(_, m)| m).collect();
        assert!(messages[1].contains("first listed at /models/0/artifact/files/0"), "{messages:?}");
        assert!(messages[2].contains("lies in the folder \"model.gguf\""), "{messages:?}");
    }

    #[test]
    fn the_primary_file_must_be_listed_with_its_hash_and_size() {
        let missing = set_doc(json!([file("other.gguf", "aa", 7)]));
        assert_eq!(found(&missing)[0].0, "/models/0/artifact/files");
        let differs = set_doc(json!([file("x", "bb", 1), file("model.gguf", "bb", 8)]));
        let pointers: Vec<String> = found(&differs).into_iter().map(|(p, _)| p).collect();
        assert_eq!(pointers, ["/models/0/artifact/files/1/sha256", "/models/0/artifact/files/1/sizeBytes"]);
        // Found at `path` when given, and 7.0 is 7.
        let mut at_path =
            set_doc(json!([{ "path": "sub/m.gguf", "sha256": "aa".repeat(32), "sizeBytes": 7.0 }]));
        at_path["models"][0]["artifact"]["path"] = json!("sub/m.gguf");
        assert_eq!(found(&at_path), []);
    }

    #[test]
    fn a_commit_revision_must_be_the_commit() {
        let mut doc = set_doc(json!([file("model.gguf", "aa", 7)]));
        doc["models"][0]["artifact"]["revision"] = json!("ab".repeat(20));
        assert_eq!(found(&doc), []);
        doc["models"][0]["artifact"]["revision"] = json!("cd".repeat(20));
        assert_eq!(found(&doc)[0].0, "/models/0/artifact/revision");
        doc["models"][0]["artifact"]["revision"] = json!("main");
        assert_eq!(found(&doc), []);
    }

    #[test]
    fn stub_values_are_found_per_field() {
        let entry = json!({
            "id": "abc",
            "dataset": { "id": "TODO-STUB-DATASET", "url": "https://example.org/x" },
            "training": { "command": "STUB: fill in", "hardware": "REVISIT: later" },
            "artifact": {
                "sha256": ALL_ZERO_SHA256,
                "sizeBytes": 0,
                "downloadUrl": "https://huggingface.co/TODO-STUB-ORG/m/resolve/main/f"
            },
            "geometry": { "dimensions": 0 },
            "provenance": { "a/b": "STUB:x" }
        });
        let pointers: Vec<_> = stub_fields(&entry).into_iter().map(|s| s.pointer).collect();
        assert_eq!(
            pointers,
            [
                "/dataset/id",
                "/training/command",
                "/training/hardware",
                "/artifact/sha256",
                "/artifact/sizeBytes",
                "/artifact/downloadUrl",
                "/provenance/a~1b"
            ]
        );
    }

    #[test]
    fn an_all_zero_sha256_of_a_listed_file_is_a_stub() {
        let entry = json!({ "artifact": { "files": [
            { "path": "a", "sha256": ALL_ZERO_SHA256, "sizeBytes": 0 },
            { "path": ALL_ZERO_SHA256, "sha256": "ab".repeat(32), "sizeBytes": 0 }
        ] } });
        let pointers: Vec<_> = stub_fields(&entry).into_iter().map(|s| s.pointer).collect();
        assert_eq!(pointers, ["/artifact/files/0/sha256"], "a 0-byte file is real, and so is a path");
    }

    #[test]
    fn real_values_are_not_stubs() {
        let entry =
            json!({ "artifact": { "sha256": "ab".repeat(32), "sizeBytes": 10 }, "notes": "a STUB: inside" });
        assert!(stub_fields(&entry).is_empty());
    }
}
