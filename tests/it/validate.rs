//! `models-fetch validate` over the index corpus in `tests/index/`, and the cross-check that
//! ajv-cli gives the same verdict for every file on the schema rules.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

use crate::fixture::{models_fetch, root, text};

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    /// ajv-cli's verdict: schema rules only.
    ajv: Verdict,
    /// `models-fetch validate`'s verdict: schema rules plus the checks a schema cannot state.
    validate: Verdict,
    /// Lines (or parts of lines) the output of `validate` must contain.
    expect: Vec<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Valid,
    Invalid,
}

fn corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(root().join("tests/index/cases.toml")).expect("corpus manifest");
    let corpus: Corpus = toml::from_str(&text).expect("corpus manifest parses");
    corpus.case
}

#[test]
fn corpus_covers_every_file() {
    let listed: Vec<String> = corpus().into_iter().map(|c| c.file).collect();
    for dir in ["tests/index/valid", "tests/index/invalid"] {
        for file in std::fs::read_dir(root().join(dir)).unwrap() {
            let name = format!("{dir}/{}", file.unwrap().file_name().to_string_lossy());
            assert!(listed.contains(&name), "{name} is not listed in tests/index/cases.toml");
        }
    }
    for case in corpus() {
        // A file that breaks a schema rule is invalid for both; only the checks beyond the
        // schema (duplicate ids, unsafe paths) may make `validate` stricter than ajv.
        if case.ajv == Verdict::Invalid {
            assert_eq!(case.validate, Verdict::Invalid, "{}", case.file);
        }
    }
}

#[test]
fn validate_gives_the_expected_verdict_and_errors() {
    let mut failures = Vec::new();
    for case in corpus() {
        let output = models_fetch(&["validate", &case.file]);
        let out = text(&output);
        let verdict = match output.status.code() {
            Some(0) => Verdict::Valid,
            Some(1) => Verdict::Invalid,
            other => panic!("{}: exit status {other:?}\n{out}", case.file),
        };
        if verdict != case.validate {
            failures.push(format!("{}: expected {:?}, got {verdict:?}\n{out}", case.file, case.validate));
        }
        for line in &case.expect {
            if !out.contains(line.as_str()) {
                failures.push(format!("{}: output lacks {line:?}\n{out}", case.file));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn seed_example_reports_the_stub_fields_of_muladhara() {
    let output = models_fetch(&["validate", "nix/index.json"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    for field in [
        "/models/0/dataset/id",
        "/models/0/dataset/url",
        "/models/0/training/repo",
        "/models/0/training/command",
        "/models/0/artifact/sha256: placeholder value (is all zeros)",
        "/models/0/artifact/sizeBytes: placeholder value (is 0)",
        "/models/0/artifact/downloadUrl",
        "/models/0/provenance/runId",
    ] {
        assert!(out.contains(&format!("warning: nix/index.json: {field}")), "{field} not reported:\n{out}");
    }
    assert!(out.contains("[model muladhara-foundation-v1]"), "{out}");

    let denied = models_fetch(&["validate", "--deny-stubs", "nix/index.json"]);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    assert!(text(&denied).contains("error: nix/index.json: /models/0/artifact/sha256"));
}

#[test]
fn bundled_indexes_are_valid() {
    for index in ["nix/index.json", "examples/index.json"] {
        let output = models_fetch(&["validate", index]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
}

#[test]
fn missing_index_file_is_not_a_verdict() {
    let output = models_fetch(&["validate", "tests/index/no-such-file.json"]);
    assert_eq!(output.status.code(), Some(66), "{}", text(&output));
    assert!(text(&output).contains("tests/index/no-such-file.json: cannot read the index"));
}

/// ajv-cli, installed by the README's test command; the test refuses to pass silently without it.
fn ajv() -> Option<PathBuf> {
    if std::env::var_os("MODELS_FETCH_SKIP_AJV").is_some() {
        return None;
    }
    let path =
        std::env::var_os("AJV").map_or_else(|| root().join(".ci/tools/node_modules/.bin/ajv"), PathBuf::from);
    assert!(
        path.exists(),
        "ajv-cli not found at {}: run .ci/test (it installs ajv-cli), set AJV=/path/to/ajv, or set MODELS_FETCH_SKIP_AJV=1 to skip the cross-check",
        path.display()
    );
    Some(path)
}

#[test]
fn ajv_agrees_with_the_schema_verdict_of_every_file() {
    let Some(ajv) = ajv() else {
        eprintln!("MODELS_FETCH_SKIP_AJV set: ajv cross-check skipped");
        return;
    };
    let mut files: Vec<(String, Verdict)> = corpus().into_iter().map(|c| (c.file, c.ajv)).collect();
    files.push(("nix/index.json".into(), Verdict::Valid));
    files.push(("examples/index.json".into(), Verdict::Valid));
    let mut failures = Vec::new();
    for (file, expected) in files {
        let output = Command::new(&ajv)
            .args(["validate", "-s", "nix/schema.json", "-d", &file, "-c", "ajv-formats"])
            .current_dir(root())
            .output()
            .expect("ajv runs");
        let verdict = if output.status.success() { Verdict::Valid } else { Verdict::Invalid };
        if verdict != expected {
            failures.push(format!("{file}: ajv says {verdict:?}, expected {expected:?}\n{}", text(&output)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
