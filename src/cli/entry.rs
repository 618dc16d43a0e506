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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::edit::{IndexEdit, MetaArgs, pretty, remove, set};
use super::{Failure, Status};
use crate::digest::{Sha256Hex, hash_reader};
use crate::index::unsafe_path_reason;
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
    #[command(flatten)]
    meta: MetaArgs,
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
    /// An index to start from (an entry of the same id is updated) and, with --write, to update.
    #[arg(long, value_name = "INDEX")]
    index: Option<PathBuf>,
    /// Write the entry into --index, replacing an entry of the same id, atomically.
    #[arg(long, requires = "index")]
    write: bool,
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

    let mut edit = IndexEdit::open(args.index.as_deref(), args.write)?;
    let mut entry = edit.start(&args.id);
    apply(args, &mut entry, &hashed);
    edit.put(entry, "entry")?;
    println!("{}", pretty(edit.placed()));
    if let Some(path) = edit.save()? {
        let files = match &hashed {
            Hashed::File { .. } => String::new(),
            Hashed::Folder { files, .. } => format!("{}, primary ", crate::index::count(files.len(), "file")),
        };
        eprintln!(
            "{}: {} {} ({files}{} bytes, sha256 {sha256})",
            path.display(),
            if edit.added() { "added" } else { "updated" },
            args.id,
            size
        );
    }
    Ok(Status::Success)
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
    args.meta.apply(entry);
    let strings = [
        ("artifact/repo", &args.repo),
        ("artifact/revision", &args.revision),
        ("artifact/commit", &args.commit),
        ("artifact/path", &args.path),
        ("artifact/downloadUrl", &args.download_url),
    ];
    for (pointer, value) in strings {
        if let Some(value) = value {
            set(entry, pointer, Value::String(value.clone()));
        }
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
            remove(entry, "artifact/path");
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
