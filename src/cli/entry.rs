//! `models-fetch entry FILE --id ID ...`: hash a trained model file in one streaming pass and
//! print a schema-valid index entry for it; with `--index F --write`, add or replace the entry in
//! that index atomically. This is the seed's CI step.
//!
//! With `--index`, an existing entry of the same id is the starting point, so a CI job that only
//! retrained a model passes the file and the id and keeps every other field.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::index_lock::{self, IndexLock, IndexLockError};
use super::{Failure, Status};
use crate::digest::hash_reader;
use crate::index::{Index, IndexError, schema};

#[derive(Debug, clap::Args)]
#[allow(clippy::struct_field_names)]
pub(super) struct Args {
    /// The trained model file.
    file: PathBuf,
    /// Model id, e.g. muladhara-foundation-v1.
    #[arg(long)]
    id: String,
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
    /// File name to publish under (default: FILE's name).
    #[arg(long)]
    filename: Option<String>,
    /// File format, e.g. safetensors (default: FILE's extension).
    #[arg(long)]
    format: Option<String>,
    /// Hub repository, org/name.
    #[arg(long)]
    repo: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    revision: Option<String>,
    /// Path of the file in the Hub repository (default: the filename).
    #[arg(long)]
    path: Option<String>,
    /// Plain download URL.
    #[arg(long)]
    download_url: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// An index to start from (an entry of the same id is updated) and, with --write, to update.
    #[arg(long, value_name = "INDEX")]
    index: Option<PathBuf>,
    /// Write the entry into --index, replacing an entry of the same id, atomically.
    #[arg(long, requires = "index")]
    write: bool,
}

fn parse_metric(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=NUMBER")?;
    let value: f64 = value.parse().map_err(|e| format!("{value:?}: {e}"))?;
    Ok((name.to_owned(), value))
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    // A regular file only: a FIFO named as the model file is refused, not read into a hang.
    let file = crate::fsx::open_regular(&args.file).map_err(|e| {
        Failure::new(
            Status::NoInput,
            anyhow::anyhow!("{}: cannot read the model file: {e}", args.file.display()),
        )
    })?;
    let (sha256, size) = hash_reader(file).map_err(|e| {
        Failure::new(Status::IoErr, anyhow::anyhow!("{}: reading failed: {e}", args.file.display()))
    })?;

    // The whole read-modify-write of the index holds its lock, so a parallel edit is never lost.
    let _lock = match (&args.index, args.write) {
        (Some(path), true) => Some(IndexLock::acquire(path, index_lock::WAIT).map_err(|e| {
            let status =
                if matches!(e, IndexLockError::Busy { .. }) { Status::TempFail } else { Status::IoErr };
            Failure::new(status, anyhow::Error::new(e))
        })?),
        _ => None,
    };
    let mut document = match &args.index {
        Some(path) => read_document(path)?,
        None => json!({ "models": [] }),
    };
    let models = document
        .get_mut("models")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Failure::new(Status::DataErr, anyhow::anyhow!("the index has no \"models\" list")))?;
    let position = models.iter().position(|m| m.get("id").and_then(Value::as_str) == Some(&args.id));
    let mut entry = position.map_or_else(|| json!({ "id": args.id }), |i| models[i].clone());
    apply(args, &mut entry, sha256.as_str(), size);
    if position.is_none() {
        schema::order_entry_keys(&mut entry);
    }
    match position {
        Some(i) => models[i] = entry.clone(),
        None => models.push(entry.clone()),
    }

    // Check the entry (and, when writing, the whole index it lands in) by the same rules as
    // `validate`; print every problem.
    let (checked, label) = if args.write {
        (document.clone(), args.index.clone().unwrap_or_default())
    } else {
        (json!({ "models": [entry] }), PathBuf::from("<entry>"))
    };
    let index = match Index::from_document(&label, &checked) {
        Ok(index) => index,
        Err(e) => {
            return Err(Failure::new(
                Status::DataErr,
                anyhow::anyhow!(
                    "{e}\nPass the missing or wrong values as flags (see `models-fetch entry --help`)."
                ),
            ));
        }
    };
    for (_, _, fields) in index.stubs().filter(|(_, e, _)| e.id.as_str() == args.id) {
        let fields: Vec<String> = fields.iter().map(ToString::to_string).collect();
        eprintln!("warning: {} still has placeholder values: {}", args.id, fields.join(", "));
    }

    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON values serialize");
    println!("{}", pretty(&entry));
    if let (true, Some(path)) = (args.write, &args.index) {
        write_atomically(path, format!("{}\n", pretty(&document)).as_bytes()).map_err(|e| {
            Failure::new(Status::IoErr, anyhow::anyhow!("{}: cannot write: {e}", path.display()))
        })?;
        eprintln!(
            "{}: {} {} ({} bytes, sha256 {sha256})",
            path.display(),
            if position.is_some() { "updated" } else { "added" },
            args.id,
            size
        );
    }
    Ok(Status::Success)
}

fn read_document(path: &Path) -> Result<Value, Failure> {
    let text = crate::index::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| IndexError::syntax(path, &e).into())
}

/// Sets every field given on the command line, and the artifact's hash and size.
fn apply(args: &Args, entry: &mut Value, sha256: &str, size: u64) {
    let file_name = args.file.file_name().map(|n| n.to_string_lossy().into_owned());
    let extension = args.file.extension().map(|e| e.to_string_lossy().into_owned());
    let set = |entry: &mut Value, pointer: &str, value: Value| {
        let mut node = entry;
        for key in pointer.split('/') {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            node = node.as_object_mut().expect("made an object").entry(key).or_insert(Value::Null);
        }
        *node = value;
    };
    let strings = [
        ("version", &args.version),
        ("chakra", &args.chakra),
        ("geometry/pattern", &args.geometry_pattern),
        ("temporalScope", &args.temporal_scope),
        ("dataset/id", &args.dataset_id),
        ("dataset/url", &args.dataset_url),
        ("dataset/commit", &args.dataset_commit),
        ("training/repo", &args.training_repo),
        ("training/command", &args.training_command),
        ("training/commit", &args.training_commit),
        ("license", &args.license),
        ("provenance/runId", &args.run_id),
        ("provenance/creator", &args.creator),
        ("artifact/repo", &args.repo),
        ("artifact/revision", &args.revision),
        ("artifact/path", &args.path),
        ("artifact/downloadUrl", &args.download_url),
        ("description", &args.description),
    ];
    for (pointer, value) in strings {
        if let Some(value) = value {
            set(entry, pointer, Value::String(value.clone()));
        }
    }
    if let Some(hz) = args.frequency_hz {
        // 432, not 432.0, when the frequency is whole.
        #[allow(clippy::cast_possible_truncation)]
        let value = if hz.fract() == 0.0 && hz.abs() < 1e15 { json!(hz as i64) } else { json!(hz) };
        set(entry, "frequencyHz", value);
    }
    if let Some(dimensions) = args.geometry_dimensions {
        set(entry, "geometry/dimensions", json!(dimensions));
    }
    if !args.tags.is_empty() {
        set(entry, "semanticTags", json!(args.tags));
    }
    for (name, value) in &args.metrics {
        set(entry, &format!("provenance/metrics/{name}"), json!(value));
    }
    if let Some(filename) = args.filename.clone().or(file_name) {
        set(entry, "artifact/filename", Value::String(filename));
    }
    if let Some(format) = args.format.clone().or(extension) {
        set(entry, "artifact/format", Value::String(format));
    }
    set(entry, "artifact/sha256", Value::String(sha256.to_owned()));
    set(entry, "artifact/sizeBytes", json!(size));
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
