//! Checks of an index that a JSON Schema cannot state: unique ids, placeholder (stub) values, and
//! file paths that would escape the directory they are published in.
//!
//! They run on the raw JSON document, so they still report what they can when the schema check
//! failed too, and every problem names its JSON pointer.

use std::collections::HashMap;

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
            if let Some(reason) = unsafe_path_reason(value) {
                found.push(Problem {
                    pointer: format!("/models/{i}/artifact/{field}"),
                    message: format!(
                        "{} {reason}; it must be a relative path of plain names separated by \"/\"",
                        Value::String(value.to_owned())
                    ),
                });
            }
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
        (pointer == "/artifact/sha256" && value.as_str() == Some(ALL_ZERO_SHA256))
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
    fn real_values_are_not_stubs() {
        let entry =
            json!({ "artifact": { "sha256": "ab".repeat(32), "sizeBytes": 10 }, "notes": "a STUB: inside" });
        assert!(stub_fields(&entry).is_empty());
    }
}
