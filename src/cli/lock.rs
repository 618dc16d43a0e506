//! `models-fetch lock org/name[@REVISION] --id ID ...`: pin a Hub model into the index from the
//! Hub's own metadata. The revision is resolved to its commit, every file at that commit is
//! listed (the tree endpoint, page after page), the selected files are pinned (LFS files by the
//! sha256 the Hub lists, small git files downloaded, hashed and checked against their git blob
//! id), and the entry is written as `entry` writes one: metadata from the flags or the index's
//! entry of that id, placeholders for what is still missing.
//!
//! `models-fetch lock --update ID --index F`: the same for an entry already in the index, at
//! the newest commit of its revision with its selection (`artifact.select`); prints what
//! changed, and exits 0 when the entry changed, 1 when it is up to date.

use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::edit::{IndexEdit, MetaArgs, pretty, remove, set};
use super::{Failure, Status};
use crate::config::Config;
use crate::hub::{Content, Hub, HubError, Settings, TreeFile};
use crate::index::{Entry, count, unsafe_path_reason};
use crate::pin::PinnedFile;
use crate::pin::diff::diff;
use crate::pin::primary::{PRIMARY_RULE, format_of, primary_file};
use crate::pin::select::{HOUSEKEEPING, Selection};
use crate::secret::Token;

const AFTER_HELP: &str = "\
Exit status: 0 the entry was pinned (--update: the entry changed, and with --write the index \
was rewritten); 1 --update only: the entry is up to date, nothing was written; 65 the Hub \
refused (401/403/404) or something cannot be pinned; 75 a transient failure (network, the \
Hub's 5xx or 429), try again; 78 a bad config, endpoint or token.";

#[derive(Debug, clap::Args)]
#[allow(clippy::struct_field_names)]
#[command(after_help = AFTER_HELP, after_long_help = format!("{AFTER_HELP}\n\n{PRIMARY_RULE}"))]
pub(super) struct Args {
    /// The Hub repository, and the branch, tag or commit to pin (default: main).
    #[arg(value_name = "ORG/NAME[@REVISION]", required_unless_present = "update", conflicts_with = "update")]
    repo: Option<String>,
    /// Model id of the entry, e.g. muladhara-foundation-v1.
    #[arg(long, required_unless_present = "update", conflicts_with = "update")]
    id: Option<String>,
    /// Re-pin the entry ID of --index to the newest commit of its revision, with the file
    /// selection it was pinned with, and print what changed.
    #[arg(long, value_name = "ID", requires = "index")]
    update: Option<String>,
    /// Take only the files this glob matches (fnmatch on the whole path, `*` crossing `/`, as
    /// `hf download --include`; a pattern ending in `/` is a folder); repeat for several.
    /// Without any: every file but .gitattributes.
    #[arg(long = "include", value_name = "GLOB", conflicts_with = "update")]
    include: Vec<String>,
    /// Leave out the files this glob matches; repeat for several.
    #[arg(long = "exclude", value_name = "GLOB", conflicts_with = "update")]
    exclude: Vec<String>,
    /// Take the endpoint, token_file, proxy, ca_file and timeouts from this models-fetch config.
    #[arg(long, value_name = "FILE", conflicts_with = "endpoint")]
    config: Option<PathBuf>,
    /// The Hub endpoint (default: https://huggingface.co, or the config's).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// A file holding the Hub token (default: the config's token_file, else $HF_TOKEN). The
    /// token is sent to the endpoint's origin only.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    meta: MetaArgs,
    /// The primary file (artifact.filename/sha256/sizeBytes), a path of the selection, instead of
    /// the one the rule of `--help` picks.
    #[arg(long, conflicts_with = "update")]
    path: Option<String>,
    /// File name to publish the primary file under (default: its path).
    #[arg(long)]
    filename: Option<String>,
    /// File format (default: the primary file's extension; safetensors for a shard index).
    #[arg(long)]
    format: Option<String>,
    /// An index to start from (an entry of the same id is updated) and, with --write, to update.
    #[arg(long, value_name = "INDEX")]
    index: Option<PathBuf>,
    /// Write the entry into --index, replacing an entry of the same id, atomically, under the
    /// same lock as `entry --write`.
    #[arg(long, requires = "index")]
    write: bool,
}

/// Placeholders for the seed's fields a Hub repository cannot tell, set where the entry has
/// none: `validate --deny-stubs` names each until it is filled in.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("version", "0.0.0-TODO-STUB"),
    ("geometry/pattern", "TODO-STUB"),
    ("dataset/id", "TODO-STUB-DATASET-ID"),
    ("dataset/url", "https://example.invalid/TODO-STUB-DATASET"),
    ("training/repo", "https://example.invalid/TODO-STUB-TRAINING-REPO"),
    ("training/command", "TODO-STUB: training command"),
    ("license", "TODO-STUB-LICENSE"),
    ("provenance/runId", "TODO-STUB-RUN-ID"),
];

/// The seed's fields the schema allows no placeholder in (an enum, a number, a slug list): they
/// must come from the flags or the index, and their flags.
const REQUIRED: &[(&str, &str)] = &[
    ("/chakra", "--chakra"),
    ("/frequencyHz", "--frequency-hz"),
    ("/geometry/dimensions", "--geometry-dimensions"),
    ("/temporalScope", "--temporal-scope"),
    ("/semanticTags", "--tag"),
];

/// A pin: the commit and the selected files at it, sorted by path.
struct Pinned {
    commit: String,
    files: Vec<PinnedFile>,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let hub = hub(args)?;
    match &args.update {
        Some(id) => update(args, &hub, id),
        None => lock(args, &hub),
    }
}

fn data_err(message: impl std::fmt::Display) -> Failure {
    Failure::new(Status::DataErr, anyhow::anyhow!("{message}"))
}

fn hub_failure(e: HubError) -> Failure {
    let status = match e {
        HubError::Permanent(_) => Status::DataErr,
        HubError::Transient(_) => Status::TempFail,
    };
    Failure::new(status, e)
}

/// The client, from the config or the flags; the token from --token-file, the config's
/// token_file, or `HF_TOKEN`.
fn hub(args: &Args) -> Result<Hub, Failure> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let token = match (&args.token_file, config.as_ref().and_then(|c| c.token_file.as_ref())) {
        (Some(file), _) => Some((
            Token::read(file).map_err(|e| Failure::new(Status::NoInput, e))?,
            format!("--token-file {}", file.display()),
        )),
        (None, Some(file)) => Some((
            Token::read(file).map_err(|e| Failure::new(Status::Config, e))?,
            format!("the config's token_file {}", file.display()),
        )),
        (None, None) => match std::env::var("HF_TOKEN") {
            // Empty is unset, as huggingface_hub reads it.
            Ok(text) if !text.trim().is_empty() => Some((
                Token::parse(&text)
                    .map_err(|reason| Failure::new(Status::Config, anyhow::anyhow!("HF_TOKEN {reason}")))?,
                "HF_TOKEN".to_owned(),
            )),
            _ => None,
        },
    };
    let settings = match &config {
        Some(c) => Settings {
            endpoint: c.endpoint.clone(),
            token,
            proxy: c.proxy.clone(),
            ca_file: c.ca_file.clone(),
            connect_timeout: c.connect_timeout,
            stall_timeout: c.stall_timeout,
        },
        None => Settings {
            endpoint: args
                .endpoint
                .clone()
                .unwrap_or_else(|| crate::index::source::DEFAULT_ENDPOINT.to_owned()),
            token,
            proxy: None,
            ca_file: None,
            connect_timeout: std::time::Duration::from_secs(10),
            stall_timeout: std::time::Duration::from_secs(30),
        },
    };
    Hub::new(settings).map_err(|e| Failure::new(Status::Config, anyhow::anyhow!(e)))
}

/// `org/name` as the schema allows it.
fn check_repo(repo: &str) -> Result<(), Failure> {
    let part = |s: &str| {
        (1..=96).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
    };
    match repo.split_once('/') {
        Some((org, name)) if part(org) && part(name) => Ok(()),
        _ => Err(data_err(format!("{repo:?} is not a Hub repository org/name"))),
    }
}

fn lock(args: &Args, hub: &Hub) -> Result<Status, Failure> {
    let (Some(spec), Some(id)) = (&args.repo, &args.id) else {
        unreachable!("clap requires ORG/NAME and --id without --update")
    };
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    check_repo(repo)?;
    if revision.is_empty() {
        return Err(data_err(format!("{spec:?}: the revision after @ is empty")));
    }
    let selection = Selection { include: args.include.clone(), exclude: args.exclude.clone() };

    // What the flags and the index cannot give, and no placeholder can stand for, is asked for
    // before anything is fetched.
    let seed = seed_of(&IndexEdit::open(args.index.as_deref(), false)?, id, &args.meta);
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(pointer, _)| seed.pointer(pointer).is_none())
        .map(|(_, flag)| *flag)
        .collect();
    if !missing.is_empty() {
        return Err(data_err(format!(
            "{id} is a new entry: pass {} (the schema allows no placeholder there; see `models-fetch lock --help`)",
            missing.join(", ")
        )));
    }

    let pinned = pin(hub, repo, revision, &selection)?;
    let primary = match &args.path {
        Some(path) => pinned.files.iter().position(|f| &f.path == path).ok_or_else(|| {
            data_err(format!("--path {path:?} is not a selected file of {repo} at {}", pinned.commit))
        })?,
        None => rule_primary(&pinned.files),
    };
    let primary_path = pinned.files[primary].path.clone();

    let mut edit = IndexEdit::open(args.index.as_deref(), args.write)?;
    let mut entry = seed_of(&edit, id, &args.meta);
    let filename = args.filename.clone().unwrap_or_else(|| primary_path.clone());
    let format = args.format.clone().or_else(|| format_of(&primary_path));
    apply_pin(&mut entry, repo, revision, &pinned, primary, &selection, filename, format);
    edit.put(entry, "lock")?;
    println!("{}", pretty(edit.placed()));
    if let Some(path) = edit.save()? {
        eprintln!(
            "{}: {} {id} ({repo}@{revision} = {}, {}, primary {primary_path})",
            path.display(),
            if edit.added() { "added" } else { "updated" },
            pinned.commit,
            count(pinned.files.len(), "file"),
        );
    }
    Ok(Status::Success)
}

fn update(args: &Args, hub: &Hub, id: &str) -> Result<Status, Failure> {
    let index_path = args.index.as_deref().expect("clap requires --index with --update");
    let before = IndexEdit::open(Some(index_path), false)?;
    let existing = typed_entry(&before, id, index_path)?;
    let Some(repo) = existing.artifact.repo.clone() else {
        return Err(data_err(format!(
            "{id}: the entry has no artifact.repo, so it is not from the Hub; lock it with `models-fetch lock ORG/NAME --id {id}`"
        )));
    };
    let revision = existing.artifact.revision.clone().unwrap_or_else(|| "main".to_owned());
    let select = existing.artifact.select.clone().unwrap_or_default();
    let selection = Selection { include: select.include, exclude: select.exclude };

    let pinned = pin(hub, &repo, &revision, &selection)?;

    let mut edit = IndexEdit::open(Some(index_path), args.write)?;
    // The entry as it is now, under the lock (another edit may have changed it meanwhile).
    let current = typed_entry(&edit, id, index_path)?;
    let old_value = edit.entry(id).cloned().expect("typed_entry found it");
    let old_primary = current.artifact.primary_path().to_owned();
    let old_files: Vec<PinnedFile> = current
        .files()
        .iter()
        .map(|f| PinnedFile {
            path: f.path.clone(),
            sha256: f.sha256.as_str().to_owned(),
            size: f.size_bytes,
            git_oid: f.git_oid.clone(),
        })
        .collect();
    // The primary file stays while it is selected; else the rule picks one again.
    let kept = pinned.files.iter().position(|f| f.path == old_primary);
    let primary = kept.unwrap_or_else(|| rule_primary(&pinned.files));
    let primary_path = pinned.files[primary].path.clone();
    let filename = args.filename.clone().unwrap_or_else(|| {
        if kept.is_some() { current.artifact.filename.clone() } else { primary_path.clone() }
    });
    let format = args.format.clone().or_else(|| {
        if kept.is_some() {
            current.artifact.format.clone().or_else(|| format_of(&primary_path))
        } else {
            format_of(&primary_path)
        }
    });

    let mut entry = old_value.clone();
    args.meta.apply(&mut entry);
    apply_pin(&mut entry, &repo, &revision, &pinned, primary, &selection, filename, format);
    let changes =
        diff(current.commit(), &old_files, &old_primary, &pinned.commit, &pinned.files, &primary_path);

    println!("{id}: {repo} {revision}");
    if entry == old_value {
        println!("up to date at {}; {}", pinned.commit, changes.lines().last().expect("a summary line"));
        return Ok(Status::Invalid);
    }
    let mut lines = changes.lines();
    if changes.commit.is_none()
        && changes.same_files()
        && changes.git_oids.is_empty()
        && changes.primary.is_none()
    {
        lines.insert(0, "no file changed; other fields of the entry were rewritten".to_owned());
    }
    for line in lines {
        println!("{line}");
    }
    edit.put(entry, "lock")?;
    if let Some(path) = edit.save()? {
        eprintln!("{}: updated {id} to {repo}@{revision} = {}", path.display(), pinned.commit);
    }
    Ok(Status::Success)
}

/// The typed entry `id` of the index `edit` read, or why there is none.
fn typed_entry(edit: &IndexEdit, id: &str, path: &std::path::Path) -> Result<Entry, Failure> {
    let value =
        edit.entry(id).ok_or_else(|| data_err(format!("{}: no entry {id:?} to update", path.display())))?;
    let index = crate::index::Index::from_document(path, &json!({ "models": [value] }))?;
    Ok(index.get(id).expect("the one entry").clone())
}

/// The entry to start from: the index's entry of `id` or a new one, the flags applied, and
/// placeholders where a field is still missing.
fn seed_of(edit: &IndexEdit, id: &str, meta: &MetaArgs) -> Value {
    let mut entry = edit.start(id);
    meta.apply(&mut entry);
    for (pointer, placeholder) in PLACEHOLDERS {
        if entry.pointer(&format!("/{pointer}")).is_none() {
            set(&mut entry, pointer, Value::String((*placeholder).to_owned()));
        }
    }
    entry
}

fn rule_primary(files: &[PinnedFile]) -> usize {
    let listed: Vec<(&str, u64)> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    primary_file(&listed)
}

/// Writes the pin into the entry: the source (repo, revision, commit), every file, the primary
/// file, the format and the selection; a `downloadUrl` goes, as the pin is the source now.
#[allow(clippy::too_many_arguments)]
fn apply_pin(
    entry: &mut Value,
    repo: &str,
    revision: &str,
    pinned: &Pinned,
    primary: usize,
    selection: &Selection,
    filename: String,
    format: Option<String>,
) {
    let primary = &pinned.files[primary];
    set(entry, "artifact/filename", Value::String(filename.clone()));
    set(entry, "artifact/sha256", Value::String(primary.sha256.clone()));
    set(entry, "artifact/sizeBytes", json!(primary.size));
    match format {
        Some(format) => set(entry, "artifact/format", Value::String(format)),
        None => remove(entry, "artifact/format"),
    }
    set(entry, "artifact/repo", Value::String(repo.to_owned()));
    set(entry, "artifact/revision", Value::String(revision.to_owned()));
    if filename == primary.path {
        remove(entry, "artifact/path");
    } else {
        set(entry, "artifact/path", Value::String(primary.path.clone()));
    }
    remove(entry, "artifact/downloadUrl");
    set(entry, "artifact/commit", Value::String(pinned.commit.clone()));
    if selection.is_default() {
        remove(entry, "artifact/select");
    } else {
        let mut select = serde_json::Map::new();
        if !selection.include.is_empty() {
            select.insert("include".into(), json!(selection.include));
        }
        if !selection.exclude.is_empty() {
            select.insert("exclude".into(), json!(selection.exclude));
        }
        set(entry, "artifact/select", Value::Object(select));
    }
    let files: Vec<Value> = pinned
        .files
        .iter()
        .map(|f| {
            let mut file = json!({ "path": f.path, "sha256": f.sha256, "sizeBytes": f.size });
            if let Some(oid) = &f.git_oid {
                file["gitOid"] = Value::String(oid.clone());
            }
            file
        })
        .collect();
    set(entry, "artifact/files", Value::Array(files));
}

/// Small files downloaded at once.
const DOWNLOADS: usize = 4;

/// Pins the files `selection` takes of `repo` at the commit `revision` points at now.
fn pin(hub: &Hub, repo: &str, revision: &str, selection: &Selection) -> Result<Pinned, Failure> {
    super::runtime()?.block_on(async {
        let commit = hub.commit(repo, revision).await.map_err(hub_failure)?;
        let tree = hub.tree(repo, &commit).await.map_err(hub_failure)?;
        let at = format!("{repo} at {commit}");
        // A pattern without glob characters names one file (or folder): it must be there.
        for pattern in &selection.include {
            let literal = !pattern.contains(['*', '?', '[']);
            if literal && !tree.iter().any(|f| crate::pin::select::matches(pattern, &f.path)) {
                return Err(data_err(format!("--include {pattern:?}: no such file in {at}")));
            }
        }
        let selected: Vec<&TreeFile> = tree.iter().filter(|f| selection.selects(&f.path)).collect();
        if selected.is_empty() {
            let housekeeping = if selection.include.is_empty() {
                format!(" (without --include, {} is left out)", HOUSEKEEPING.join(", "))
            } else {
                String::new()
            };
            return Err(data_err(format!(
                "the selection takes none of the {} of {at}{housekeeping}",
                count(tree.len(), "file")
            )));
        }
        let mut planned = Vec::with_capacity(selected.len());
        for file in &selected {
            if let Some(reason) = unsafe_path_reason(&file.path) {
                return Err(data_err(format!("{at}: the path {:?} {reason}, which an index cannot hold", file.path)));
            }
            let content =
                file.content().map_err(|e| data_err(format!("{at}: {:?} cannot be pinned: {e}", file.path)))?;
            planned.push((file.path.clone(), content));
        }
        let files: Vec<PinnedFile> = futures_util::stream::iter(planned)
            .map(|(path, content)| {
                let commit = &commit;
                let at = &at;
                async move {
                    match content {
                        Content::Lfs { sha256, size } => Ok(PinnedFile { path, sha256, size, git_oid: None }),
                        Content::Git { oid, size } => {
                            let got = hub.download(repo, commit, &path, size).await.map_err(|e| {
                                let status = match e {
                                    HubError::Permanent(_) => Status::DataErr,
                                    HubError::Transient(_) => Status::TempFail,
                                };
                                Failure::new(status, anyhow::anyhow!("{path:?} of {at}: {e}"))
                            })?;
                            if got.git_oid != oid {
                                return Err(data_err(format!(
                                    "{path:?} of {at}: the content served (git blob {}) is not the one the tree lists (oid {oid}); refused",
                                    got.git_oid
                                )));
                            }
                            Ok(PinnedFile { path, sha256: got.sha256, size: got.size, git_oid: Some(oid) })
                        }
                    }
                }
            })
            .buffered(DOWNLOADS)
            .try_collect()
            .await?;
        let mut files = files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Pinned { commit, files })
    })
}
