//! The model index (`index.json`): loading, validation and the typed entries.
//!
//! Loading reads the file once, parses JSON (syntax errors carry line and column), checks the
//! whole document against the project's schema, runs the checks a schema cannot state, and only
//! then deserializes typed entries. Every problem is collected, not just the first.

mod checks;
mod model;
pub mod schema;
pub mod source;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

pub use checks::unsafe_path_reason;
pub use model::{Entry, ModelId};
pub use source::{HubFile, Source, SourceError};

/// Index files larger than this are refused before parsing (a real index is kilobytes).
pub const MAX_INDEX_BYTES: u64 = crate::fsx::INDEX.bytes;

/// One problem at one place in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer into the index document (`/models/0/artifact/sha256`); empty for the root.
    pub pointer: String,
    pub message: String,
}

/// A placeholder value in an entry; the pointer is relative to the entry (`/artifact/sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubField {
    pub pointer: String,
    pub reason: String,
}

impl fmt::Display for StubField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.pointer.trim_start_matches('/').replace('/', "."), self.reason)
    }
}

/// A problem located in a file, with the model it belongs to when that is known.
#[derive(Debug, Clone)]
pub struct Located {
    pub file: PathBuf,
    pub model: Option<String>,
    /// The `path` of the model file a pointer `/models/N/artifact/files/M...` falls in.
    pub repo_file: Option<String>,
    pub problem: Problem,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.problem.pointer.is_empty() { "/" } else { &self.problem.pointer };
        write!(f, "{}: {pointer}", self.file.display())?;
        if let Some(path) = &self.repo_file {
            // Quoted only when it would not read as one plain name.
            if path.is_empty() || path.chars().any(|c| c.is_control() || c == ')') {
                write!(f, " ({})", Value::String(path.clone()))?;
            } else {
                write!(f, " ({path})")?;
            }
        }
        write!(f, ": {}", self.problem.message)?;
        if let Some(model) = &self.model {
            write!(f, " [model {model}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: cannot read the index: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: the index is {}, more than the {MAX_INDEX_BYTES} accepted (64 MiB, the limit for an index)", path.display(), size.map_or_else(|| "larger".to_owned(), |s| format!("{s} bytes")))]
    TooLarge { path: PathBuf, size: Option<u64> },
    #[error("{}:{line}:{column}: not valid JSON: {message}", path.display())]
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{} is not a valid index ({}):\n{}", path.display(), count(problems.len(), "problem"), list(problems))]
    Invalid { path: PathBuf, problems: Vec<Located> },
}

/// `1 problem`, `2 problems`.
pub fn count(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

fn list(problems: &[Located]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// A valid index: its typed entries and, per entry, the placeholder values it still holds.
#[derive(Debug, Clone)]
pub struct Index {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    stubs: Vec<Vec<StubField>>,
}

/// The text of the index file at `path`: a regular file (a FIFO or a device is refused, never
/// read) of at most [`MAX_INDEX_BYTES`] (a larger one is refused unread, or when it grows past
/// that while it is read).
pub fn read_text(path: &Path) -> Result<String, IndexError> {
    crate::fsx::read_bounded_string(path, crate::fsx::INDEX).map_err(|source| {
        match crate::fsx::cause::<crate::fsx::TooLarge>(&source) {
            Some(too_large) => IndexError::TooLarge { path: path.to_owned(), size: too_large.size },
            None => IndexError::Read { path: path.to_owned(), source },
        }
    })
}

impl Index {
    /// Reads and validates the index at `path`.
    pub fn load(path: &Path) -> Result<Self, IndexError> {
        let text = read_text(path)?;
        Self::parse(path, &text)
    }

    /// Validates index text; `path` is only used to name the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, IndexError> {
        let document: Value = serde_json::from_str(text).map_err(|e| IndexError::syntax(path, &e))?;
        Self::from_document(path, &document)
    }

    /// Validates an already-parsed index document.
    pub fn from_document(path: &Path, document: &Value) -> Result<Self, IndexError> {
        let mut problems = schema::violations(document);
        problems.extend(checks::problems(document));
        if problems.is_empty() {
            match Self::typed(document) {
                Ok((entries, stubs)) => return Ok(Self { path: path.to_owned(), entries, stubs }),
                Err(problem) => problems.push(problem),
            }
        }
        let problems = problems
            .into_iter()
            .map(|problem| Located {
                file: path.to_owned(),
                model: model_of(document, &problem.pointer),
                repo_file: repo_file_of(document, &problem.pointer),
                problem,
            })
            .collect();
        Err(IndexError::Invalid { path: path.to_owned(), problems })
    }

    fn typed(document: &Value) -> Result<(Vec<Entry>, Vec<Vec<StubField>>), Problem> {
        let models = document["models"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut entries = Vec::with_capacity(models.len());
        for (i, model) in models.iter().enumerate() {
            entries.push(
                Entry::deserialize(model)
                    .map_err(|e| Problem { pointer: format!("/models/{i}"), message: e.to_string() })?,
            );
        }
        Ok((entries, models.iter().map(checks::stub_fields).collect()))
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id.as_str() == id)
    }

    /// Placeholder values of the entry with this id (empty when it has none or is unknown).
    pub fn stub_fields(&self, id: &str) -> &[StubField] {
        self.entries.iter().position(|e| e.id.as_str() == id).map_or(&[], |i| self.stubs[i].as_slice())
    }

    /// Every entry that holds placeholder values, with those values.
    /// Every entry that holds placeholder values: its position in `models`, the entry, the values.
    pub fn stubs(&self) -> impl Iterator<Item = (usize, &Entry, &[StubField])> {
        self.entries
            .iter()
            .zip(&self.stubs)
            .enumerate()
            .filter(|(_, (_, s))| !s.is_empty())
            .map(|(i, (e, s))| (i, e, s.as_slice()))
    }
}

impl IndexError {
    /// A JSON syntax error in `path`, at the line and column serde_json found it.
    pub fn syntax(path: &Path, e: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C"; the error names them already.
        let text = e.to_string();
        let message = text.rfind(" at line ").map_or(text.clone(), |at| text[..at].to_owned());
        IndexError::Syntax { path: path.to_owned(), line: e.line(), column: e.column(), message }
    }
}

/// The id of the model that a pointer `/models/N/...` falls in, when that entry has one.
fn model_of(document: &Value, pointer: &str) -> Option<String> {
    let index = pointer.strip_prefix("/models/")?.split('/').next()?;
    document.pointer(&format!("/models/{index}/id"))?.as_str().map(str::to_owned)
}

/// The path of the model file that a pointer `/models/N/artifact/files/M/...` falls in.
fn repo_file_of(document: &Value, pointer: &str) -> Option<String> {
    let rest = pointer.strip_prefix("/models/")?;
    let (model, rest) = rest.split_once("/artifact/files/")?;
    let file = rest.split('/').next()?;
    document.pointer(&format!("/models/{model}/artifact/files/{file}/path"))?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_give_line_and_column() {
        let err = Index::parse(Path::new("index.json"), "{\n  \"models\": [,]\n}").unwrap_err();
        assert_eq!(err.to_string(), "index.json:2:14: not valid JSON: expected value");
    }

    #[test]
    fn problems_in_a_listed_file_name_its_path() {
        let doc = serde_json::json!({ "models": [ { "id": "abc", "artifact": { "files": [
            { "path": "config.json", "sha256": "x", "sizeBytes": 1 }
        ] } } ] });
        let Err(IndexError::Invalid { problems, .. }) = Index::from_document(Path::new("index.json"), &doc)
        else {
            panic!("invalid index accepted");
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("index.json: /models/0/artifact/files/0/sha256 (config.json): \"x\"")),
            "{lines:#?}"
        );
    }

    #[test]
    fn entries_give_their_files_and_commit() {
        let entry = |artifact: Value| {
            let doc = serde_json::json!({ "models": [ {
                "id": "abc", "version": "1.0.0", "chakra": "soma", "frequencyHz": 1,
                "geometry": { "pattern": "p", "dimensions": 1 }, "temporalScope": "daily",
                "semanticTags": ["abc"], "dataset": { "id": "d", "url": "https://e.org/d" },
                "training": { "repo": "https://e.org/t", "command": "c" }, "artifact": artifact,
                "license": "MIT", "provenance": { "runId": "r" }
            } ] });
            Index::from_document(Path::new("index.json"), &doc).unwrap().entries.remove(0)
        };
        let sha = "ab".repeat(32);
        let single = entry(
            serde_json::json!({ "filename": "m.gguf", "path": "q/m.gguf", "sha256": sha, "sizeBytes": 3 }),
        );
        assert!(!single.is_file_set());
        assert_eq!(single.commit(), None);
        let files = single.files();
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].path.as_str(), files[0].sha256.as_str(), files[0].size_bytes),
            ("q/m.gguf", sha.as_str(), 3)
        );

        let commit = "cd".repeat(20);
        let set = entry(serde_json::json!({
            "filename": "m.gguf", "sha256": sha, "sizeBytes": 3, "commit": commit,
            "files": [
                { "path": "config.json", "sha256": "ef".repeat(32), "sizeBytes": 2, "gitOid": "12".repeat(20) },
                { "path": "m.gguf", "sha256": sha, "sizeBytes": 3.0 }
            ]
        }));
        assert!(set.is_file_set());
        assert_eq!(set.commit(), Some(commit.as_str()));
        let files = set.files();
        let listed: Vec<(&str, u64, Option<&str>)> =
            files.iter().map(|f| (f.path.as_str(), f.size_bytes, f.git_oid.as_deref())).collect();
        let oid = "12".repeat(20);
        assert_eq!(listed, [("config.json", 2, Some(oid.as_str())), ("m.gguf", 3, None)]);
    }

    #[test]
    fn pattern_error_names_file_pointer_rule_and_model() {
        let doc = serde_json::json!({ "models": [ { "id": "abc", "artifact": { "sha256": "abc" } } ] });
        let Err(IndexError::Invalid { problems, .. }) = Index::from_document(Path::new("index.json"), &doc)
        else {
            panic!("invalid index accepted");
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(&r#"index.json: /models/0/artifact/sha256: "abc" does not match "^[a-f0-9]{64}$" [model abc]"#.to_owned()),
            "{lines:#?}"
        );
    }
}
