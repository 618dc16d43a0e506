//! `models-fetch entry FILE --id ID ...`: hash a trained model file in one streaming pass and
//! print a schema-valid index entry for it; with `--index F --write`, add or replace the entry in
//! that index atomically. This is the seed's CI step.
//!
//! `models-fetch entry DIR --commit SHA ...`: the same for a model that is a set of files (a
//! local snapshot of its repository at that commit): every file under DIR is hashed and listed
//! in `artifact.files`, and one of them is chosen as the primary file by [`primary_file`].
//!
//! With `--index`, an existing entry of the same id is the starting point, so a CI job that only
//! retrained a model passes the file and the id and keeps every other field.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value, json};

use super::index_lock::{self, IndexLock, IndexLockError};
use super::{Failure, Status};
use crate::digest::{Sha256Hex, hash_reader};
use crate::index::{Index, IndexError, schema, unsafe_path_reason};
use crate::pin::primary::{PRIMARY_RULE, format_of, primary_file};

#[derive(Debug, clap::Args)]
#[allow(clippy::struct_field_names)]
#[command(after_help = "For a folder, `--help` says how the primary file is chosen.", after_long_help = PRIMARY_RULE)]
pub(super) struct Args {
    /// The trained model file, or a folder with every file of the model.
    ///
    /// A folder is a local snapshot of the model's repository at --commit (a clone, a
    /// `hf download --local-dir` folder or a Hub cache snapshot): every regular file under it,
    /// symlinks followed, is hashed and listed in artifact.files, sorted by path, with its
    /// path relative to the folder. Skipped: `.git` (folders and files of that name, anywhere)
    /// and huggingface_hub's `.cache/huggingface` at the top; `.gitattributes` is a file of the
    /// repository and is listed. No gitOid is written (an LFS file's git blob is its pointer,
    /// which a local folder does not have).
    #[arg(value_name = "FILE|DIR", verbatim_doc_comment)]
    file: PathBuf,
    /// The 40-hex commit of the Hub repository the model is pinned to (artifact.commit);
    /// required for a folder.
    #[arg(long)]
    commit: Option<String>,
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
    /// File name to publish under (default: FILE's name; for a folder, the primary file's path).
    #[arg(long)]
    filename: Option<String>,
    /// File format, e.g. safetensors (default: the extension of FILE or of the primary file;
    /// safetensors for a *.safetensors.index.json).
    #[arg(long)]
    format: Option<String>,
    /// Hub repository, org/name.
    #[arg(long)]
    repo: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    revision: Option<String>,
    /// Path of the file in the Hub repository (default: the filename). For a folder: the
    /// primary file, instead of the one the rule below picks.
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

/// What was hashed: one file, or every file of a folder and which of them is the primary one.
enum Hashed {
    File { sha256: Sha256Hex, size: u64 },
    Folder { files: Vec<HashedFile>, primary: usize },
}

/// One file of a folder, its path relative to the folder with `/` between names.
#[derive(Debug, Clone)]
struct HashedFile {
    path: String,
    sha256: Sha256Hex,
    size: u64,
}

impl Hashed {
    /// The primary file's sha256 and size.
    fn primary(&self) -> (&Sha256Hex, u64) {
        match self {
            Hashed::File { sha256, size } => (sha256, *size),
            Hashed::Folder { files, primary } => (&files[*primary].sha256, files[*primary].size),
        }
    }
}

fn no_input(path: &Path, what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(Status::NoInput, anyhow::anyhow!("{}: {what}: {e}", path.display()))
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let meta =
        std::fs::metadata(&args.file).map_err(|e| no_input(&args.file, "cannot read the model file", e))?;
    let hashed = if meta.is_dir() {
        if args.commit.is_none() {
            return Err(Failure::new(
                Status::DataErr,
                anyhow::anyhow!(
                    "{} is a folder: pass --commit SHA, the 40-hex commit of the repository its files are from",
                    args.file.display()
                ),
            ));
        }
        let files = hash_folder(&args.file)?;
        let primary = match &args.path {
            Some(path) => files.iter().position(|f| &f.path == path).ok_or_else(|| {
                Failure::new(
                    Status::DataErr,
                    anyhow::anyhow!("--path {path:?} is not a file under {}", args.file.display()),
                )
            })?,
            None => {
                let listed: Vec<(&str, u64)> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
                primary_file(&listed)
            }
        };
        Hashed::Folder { files, primary }
    } else {
        // A regular file only: a FIFO named as the model file is refused, not read into a hang.
        let file = crate::fsx::open_regular(&args.file)
            .map_err(|e| no_input(&args.file, "cannot read the model file", e))?;
        let (sha256, size) = hash_reader(file).map_err(|e| {
            Failure::new(Status::IoErr, anyhow::anyhow!("{}: reading failed: {e}", args.file.display()))
        })?;
        Hashed::File { sha256, size }
    };
    let (sha256, size) = hashed.primary();

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
    apply(args, &mut entry, &hashed);
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
        let files = match &hashed {
            Hashed::File { .. } => String::new(),
            Hashed::Folder { files, .. } => format!("{}, primary ", crate::index::count(files.len(), "file")),
        };
        eprintln!(
            "{}: {} {} ({files}{} bytes, sha256 {sha256})",
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

/// Every regular file under `dir` (symlinks followed; `.git` and `.cache/huggingface` skipped),
/// sorted by path, each hashed; the files are hashed in parallel, one file per thread at a time.
fn hash_folder(dir: &Path) -> Result<Vec<HashedFile>, Failure> {
    let skipped = |entry: &walkdir::DirEntry| {
        entry.depth() > 0
            && (entry.file_name() == ".git"
                || entry.path().strip_prefix(dir).is_ok_and(|rel| rel == Path::new(".cache/huggingface")))
    };
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for item in walkdir::WalkDir::new(dir).follow_links(true).into_iter().filter_entry(|e| !skipped(e)) {
        let item = item.map_err(|e| {
            let at = e.path().unwrap_or(dir).to_owned();
            no_input(&at, "cannot read it", e.io_error().map_or_else(|| e.to_string(), ToString::to_string))
        })?;
        if item.file_type().is_dir() {
            continue;
        }
        if !item.file_type().is_file() {
            return Err(no_input(
                item.path(),
                "cannot be listed",
                "not a regular file, a folder or a link to one",
            ));
        }
        let rel = item.path().strip_prefix(dir).expect("walkdir stays under its root");
        let names: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        let path = names.map(|n| n.join("/")).ok_or_else(|| {
            Failure::new(
                Status::DataErr,
                anyhow::anyhow!("{}: the file name is not UTF-8", item.path().display()),
            )
        })?;
        if let Some(reason) = unsafe_path_reason(&path) {
            return Err(Failure::new(
                Status::DataErr,
                anyhow::anyhow!(
                    "{}: its path {path:?} {reason}, which an index cannot hold",
                    item.path().display()
                ),
            ));
        }
        found.push((path, item.into_path()));
    }
    if found.is_empty() {
        return Err(no_input(dir, "cannot be listed", "the folder holds no files"));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));

    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(found.len());
    let mut hashed: Vec<Option<Result<(Sha256Hex, u64), Failure>>> = Vec::new();
    hashed.resize_with(found.len(), || None);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, path)) = found.get(i) else { break };
                        let result = crate::fsx::open_regular(path)
                            .map_err(|e| no_input(path, "cannot read the model file", e))
                            .and_then(|file| {
                                hash_reader(file).map_err(|e| {
                                    Failure::new(
                                        Status::IoErr,
                                        anyhow::anyhow!("{}: reading failed: {e}", path.display()),
                                    )
                                })
                            });
                        let failed = result.is_err();
                        done.push((i, result));
                        if failed {
                            // The others stop at their next file.
                            next.store(found.len(), Ordering::Relaxed);
                            break;
                        }
                    }
                    done
                })
            })
            .collect();
        for thread in threads {
            for (i, result) in thread.join().expect("a hashing thread panicked") {
                hashed[i] = Some(result);
            }
        }
    });
    let mut files = Vec::with_capacity(found.len());
    for ((path, _), result) in found.into_iter().zip(hashed) {
        match result {
            Some(Ok((sha256, size))) => files.push(HashedFile { path, sha256, size }),
            Some(Err(failure)) => return Err(failure),
            None => {}
        }
    }
    Ok(files)
}

/// Sets every field given on the command line, and the artifact's hash and size (for a folder,
/// its files, its commit and its primary file).
fn apply(args: &Args, entry: &mut Value, hashed: &Hashed) {
    let (sha256, size) = hashed.primary();
    let (file_name, extension) = match hashed {
        Hashed::File { .. } => (
            args.file.file_name().map(|n| n.to_string_lossy().into_owned()),
            args.file.extension().map(|e| e.to_string_lossy().into_owned()),
        ),
        Hashed::Folder { files, primary } => {
            let path = &files[*primary].path;
            (Some(path.clone()), format_of(path))
        }
    };
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
        ("artifact/commit", &args.commit),
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
    set(entry, "artifact/sha256", Value::String(sha256.as_str().to_owned()));
    set(entry, "artifact/sizeBytes", json!(size));
    if let Hashed::Folder { files, primary } = hashed {
        // The primary file is found at `path`, else at `filename`: `path` only when they differ.
        let primary_path = &files[*primary].path;
        let filename = entry.pointer("/artifact/filename").and_then(Value::as_str);
        if filename == Some(primary_path.as_str()) {
            if let Some(artifact) = entry.get_mut("artifact").and_then(Value::as_object_mut) {
                artifact.shift_remove("path");
            }
        } else {
            set(entry, "artifact/path", Value::String(primary_path.clone()));
        }
        let listed: Vec<Value> = files
            .iter()
            .map(|f| json!({ "path": f.path, "sha256": f.sha256.as_str(), "sizeBytes": f.size }))
            .collect();
        set(entry, "artifact/files", Value::Array(listed));
    }
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
