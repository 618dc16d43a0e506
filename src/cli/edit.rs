//! What `entry` and `lock` share: the seed's metadata flags and how they are set in an entry,
//! and the edit of an index file: read, change one entry, check by the rules of `validate`,
//! write atomically, all under the index's lock (`index_lock`) when writing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::index_lock::{self, IndexLock, IndexLockError};
use super::{Failure, Status};
use crate::index::{Index, IndexError, schema};

/// The seed's metadata of an entry, as flags; a flag not given keeps what the entry has.
#[derive(Debug, Clone, clap::Args)]
#[allow(clippy::struct_field_names)]
pub(super) struct MetaArgs {
    /// Semantic version, e.g. 1.0.0.
    #[arg(long)]
    version: Option<String>,
    /// Chakra the model belongs to.
    #[arg(long)]
    chakra: Option<String>,
    /// Resonant frequency in Hz (0-10000).
    #[arg(long)]
    frequency_hz: Option<f64>,
    /// Sacred-geometry pattern, e.g. hexagon.
    #[arg(long)]
    geometry_pattern: Option<String>,
    /// Geometry dimensions (1-13).
    #[arg(long)]
    geometry_dimensions: Option<u64>,
    /// Temporal scope, e.g. eternal.
    #[arg(long)]
    temporal_scope: Option<String>,
    /// A semantic tag; repeat for several (replaces the existing tags).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    #[arg(long)]
    dataset_id: Option<String>,
    #[arg(long)]
    dataset_url: Option<String>,
    #[arg(long)]
    dataset_commit: Option<String>,
    #[arg(long)]
    training_repo: Option<String>,
    #[arg(long)]
    training_command: Option<String>,
    #[arg(long)]
    training_commit: Option<String>,
    /// SPDX license identifier.
    #[arg(long)]
    license: Option<String>,
    /// Training run id (provenance.runId).
    #[arg(long)]
    run_id: Option<String>,
    /// Who trained the model (provenance.creator).
    #[arg(long)]
    creator: Option<String>,
    /// A metric NAME=NUMBER for provenance.metrics; repeat for several.
    #[arg(long = "metric", value_name = "NAME=NUMBER", value_parser = parse_metric)]
    metrics: Vec<(String, f64)>,
    #[arg(long)]
    description: Option<String>,
}

fn parse_metric(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=NUMBER")?;
    let value: f64 = value.parse().map_err(|e| format!("{value:?}: {e}"))?;
    Ok((name.to_owned(), value))
}

impl MetaArgs {
    /// Sets every field given on the command line.
    pub(super) fn apply(&self, entry: &mut Value) {
        let strings = [
            ("version", &self.version),
            ("chakra", &self.chakra),
            ("geometry/pattern", &self.geometry_pattern),
            ("temporalScope", &self.temporal_scope),
            ("dataset/id", &self.dataset_id),
            ("dataset/url", &self.dataset_url),
            ("dataset/commit", &self.dataset_commit),
            ("training/repo", &self.training_repo),
            ("training/command", &self.training_command),
            ("training/commit", &self.training_commit),
            ("license", &self.license),
            ("provenance/runId", &self.run_id),
            ("provenance/creator", &self.creator),
            ("description", &self.description),
        ];
        for (pointer, value) in strings {
            if let Some(value) = value {
                set(entry, pointer, Value::String(value.clone()));
            }
        }
        if let Some(hz) = self.frequency_hz {
            // 432, not 432.0, when the frequency is whole.
            #[allow(clippy::cast_possible_truncation)]
            let value = if hz.fract() == 0.0 && hz.abs() < 1e15 { json!(hz as i64) } else { json!(hz) };
            set(entry, "frequencyHz", value);
        }
        if let Some(dimensions) = self.geometry_dimensions {
            set(entry, "geometry/dimensions", json!(dimensions));
        }
        if !self.tags.is_empty() {
            set(entry, "semanticTags", json!(self.tags));
        }
        for (name, value) in &self.metrics {
            set(entry, &format!("provenance/metrics/{name}"), json!(value));
        }
    }
}

/// Sets the field at `pointer` (`/`-separated keys below `entry`), making the objects on the way.
pub(super) fn set(entry: &mut Value, pointer: &str, value: Value) {
    let mut node = entry;
    for key in pointer.split('/') {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node.as_object_mut().expect("made an object").entry(key).or_insert(Value::Null);
    }
    *node = value;
}

/// Removes the field at `pointer`, if there is one.
pub(super) fn remove(entry: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').map_or(("", pointer), |(p, k)| (p, k));
    let parent = if parent.is_empty() { Some(entry) } else { entry.pointer_mut(&format!("/{parent}")) };
    if let Some(object) = parent.and_then(Value::as_object_mut) {
        object.shift_remove(key);
    }
}

/// One edit of an index (or of a new, empty one when there is no index file): the document as
/// read, and the index's lock while writing, held from the read to the end of the write so a
/// parallel edit is never lost.
pub(super) struct IndexEdit {
    path: Option<PathBuf>,
    write: bool,
    _lock: Option<IndexLock>,
    document: Value,
    /// Where the edited entry is in `models`, once [`IndexEdit::put`] placed it.
    position: Option<usize>,
    added: bool,
}

impl IndexEdit {
    /// Reads `index` (after taking its lock, when `write`); without an index, an empty one.
    pub(super) fn open(index: Option<&Path>, write: bool) -> Result<Self, Failure> {
        let lock = match (index, write) {
            (Some(path), true) => Some(IndexLock::acquire(path, index_lock::WAIT).map_err(|e| {
                let status =
                    if matches!(e, IndexLockError::Busy { .. }) { Status::TempFail } else { Status::IoErr };
                Failure::new(status, anyhow::Error::new(e))
            })?),
            _ => None,
        };
        let document = match index {
            Some(path) => read_document(path)?,
            None => json!({ "models": [] }),
        };
        if !document.get("models").is_some_and(Value::is_array) {
            return Err(Failure::new(Status::DataErr, anyhow::anyhow!("the index has no \"models\" list")));
        }
        Ok(Self {
            path: index.map(Path::to_owned),
            write,
            _lock: lock,
            document,
            position: None,
            added: false,
        })
    }

    fn models(&self) -> &Vec<Value> {
        self.document["models"].as_array().expect("checked when read")
    }

    /// The index's entry of this id, as it is in the file.
    pub(super) fn entry(&self, id: &str) -> Option<&Value> {
        self.models().iter().find(|m| m.get("id").and_then(Value::as_str) == Some(id))
    }

    /// The entry to start from: the index's entry of this id, else one holding only the id.
    pub(super) fn start(&self, id: &str) -> Value {
        self.entry(id).cloned().unwrap_or_else(|| json!({ "id": id }))
    }

    /// Puts `entry` in the index in place of the entry of its id (or last, its keys in the
    /// schema's order, when new) and checks it, and when writing the whole index, by the rules
    /// of `validate`; placeholder values left in it are printed as warnings. `command` names
    /// the command whose `--help` lists the flags that fill in what is missing.
    pub(super) fn put(&mut self, mut entry: Value, command: &str) -> Result<(), Failure> {
        let id = entry.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let position = self.models().iter().position(|m| m.get("id").and_then(Value::as_str) == Some(&id));
        if position.is_none() {
            schema::order_entry_keys(&mut entry);
        }
        let models = self.document["models"].as_array_mut().expect("checked when read");
        let at = match position {
            Some(i) => {
                models[i] = entry.clone();
                i
            }
            None => {
                models.push(entry.clone());
                models.len() - 1
            }
        };
        self.position = Some(at);
        self.added = position.is_none();
        let (checked, label) = if self.write {
            (self.document.clone(), self.path.clone().unwrap_or_default())
        } else {
            (json!({ "models": [entry] }), PathBuf::from("<entry>"))
        };
        let index = Index::from_document(&label, &checked).map_err(|e| {
            Failure::new(
                Status::DataErr,
                anyhow::anyhow!(
                    "{e}\nPass the missing or wrong values as flags (see `models-fetch {command} --help`)."
                ),
            )
        })?;
        for (_, _, fields) in index.stubs().filter(|(_, e, _)| e.id.as_str() == id) {
            let fields: Vec<String> = fields.iter().map(ToString::to_string).collect();
            eprintln!("warning: {id} still has placeholder values: {}", fields.join(", "));
        }
        Ok(())
    }

    /// The entry as [`IndexEdit::put`] placed it.
    pub(super) fn placed(&self) -> &Value {
        &self.models()[self.position.expect("put before placed")]
    }

    /// Whether [`IndexEdit::put`] added the entry (rather than replacing one).
    pub(super) fn added(&self) -> bool {
        self.added
    }

    /// With `--write`, replaces the index file with the edited document, atomically; returns
    /// the path written, or `None` when not writing.
    pub(super) fn save(&self) -> Result<Option<&Path>, Failure> {
        let (true, Some(path)) = (self.write, &self.path) else { return Ok(None) };
        write_atomically(path, format!("{}\n", pretty(&self.document)).as_bytes()).map_err(|e| {
            Failure::new(Status::IoErr, anyhow::anyhow!("{}: cannot write: {e}", path.display()))
        })?;
        Ok(Some(path))
    }
}

/// JSON as the index is written: pretty, in its keys' order.
pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialize")
}

/// The index file as JSON (not yet checked against the schema).
pub(super) fn read_document(path: &Path) -> Result<Value, Failure> {
    let text = crate::index::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| IndexError::syntax(path, &e).into())
}

/// Replaces `path` with `bytes` so that readers see the old or the new file, never a mix:
/// a temp file in the same directory, fsync, rename, fsync of the directory. Keeps the mode.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new().prefix(".index.json.").tempfile_in(dir)?;
    temp.write_all(bytes)?;
    if let Ok(meta) = std::fs::metadata(path) {
        temp.as_file().set_permissions(meta.permissions())?;
    }
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_makes_the_objects_on_the_way_and_remove_takes_one_field() {
        let mut entry = json!({ "id": "x", "artifact": { "path": "p", "filename": "f" } });
        set(&mut entry, "provenance/metrics/loss", json!(1.5));
        set(&mut entry, "artifact/filename", json!("g"));
        remove(&mut entry, "artifact/path");
        remove(&mut entry, "artifact/nothing");
        remove(&mut entry, "nothing/at/all");
        assert_eq!(
            entry,
            json!({ "id": "x", "artifact": { "filename": "g" }, "provenance": { "metrics": { "loss": 1.5 } } })
        );
    }
}
