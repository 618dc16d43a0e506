//! `models-fetch plan --config FILE`: what would be fetched, from where, and where it would be
//! published. Reads the config and the index only; no network.

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::Serialize;

use super::{ConfigArg, Failure, Status};
use crate::item::Item;
use crate::layout::Layout;
use crate::plan::plan;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// `plan --json`: the plan's items, each with the paths the layout gives it.
#[derive(Serialize)]
struct Json {
    items: Vec<JsonItem>,
}

#[derive(Serialize)]
struct JsonItem {
    id: String,
    version: String,
    chakra: String,
    /// The URL of its own source (of the primary file).
    source: String,
    /// The primary file's sha256.
    sha256: String,
    /// Bytes of every file of the model.
    size_bytes: u64,
    /// The commit the model is pinned to, when the index gives one.
    commit: Option<String>,
    /// The primary file in the download cache, named by its sha256.
    blob_path: PathBuf,
    /// The stable path consumers read (the primary file's).
    store_path: PathBuf,
    /// The primary file's partial download, while one is in flight.
    partial_path: PathBuf,
    /// The byte-range sidecar of a parallel download of the primary file.
    sidecar_path: PathBuf,
    /// The record that the primary file's blob was verified.
    stamp_path: PathBuf,
    /// The link in `by-chakra/`.
    chakra_link: PathBuf,
    /// The model's folder consumers read, `{store_dir}/{id}` (a link to its tree).
    model_path: PathBuf,
    /// The tree that folder points at when this plan is published.
    tree_path: PathBuf,
    /// The Hub ref that names the model's commit, for a Hub model.
    ref_path: Option<PathBuf>,
    /// Every file of the model.
    files: Vec<JsonFile>,
}

#[derive(Serialize)]
struct JsonFile {
    /// Its path in the repository.
    path: String,
    /// Its path in the model's folder.
    name: String,
    sha256: String,
    size_bytes: u64,
    git_oid: Option<String>,
    blob_path: PathBuf,
    partial_path: PathBuf,
    sidecar_path: PathBuf,
    stamp_path: PathBuf,
    /// `{store_dir}/{id}/{name}`.
    store_path: PathBuf,
    /// Its snapshot link, when the commit is known from the index.
    snapshot_path: Option<PathBuf>,
}

impl JsonItem {
    fn of(layout: &Layout, item: &Item) -> Self {
        let primary = item.primary();
        let files = item
            .files
            .iter()
            .map(|file| JsonFile {
                path: file.path.clone(),
                name: file.name.clone(),
                sha256: file.sha256.to_string(),
                size_bytes: file.size_bytes,
                git_oid: file.git_oid.clone(),
                blob_path: layout.blob(item, file),
                partial_path: layout.partial(item, file),
                sidecar_path: layout.sidecar(item, file),
                stamp_path: layout.stamp(file.sha256.as_str()),
                store_path: layout.store_file(item, file),
                snapshot_path: item
                    .hub()
                    .zip(item.commit.as_deref())
                    .map(|(hub, commit)| layout.snapshot(hub, commit, file)),
            })
            .collect();
        Self {
            id: item.id.to_string(),
            version: item.version.clone(),
            chakra: item.chakra.clone(),
            source: item.source.url(),
            sha256: primary.sha256.to_string(),
            size_bytes: item.size_bytes(),
            commit: item.commit.clone(),
            blob_path: layout.blob(item, primary),
            store_path: layout.store_path(item),
            partial_path: layout.partial(item, primary),
            sidecar_path: layout.sidecar(item, primary),
            stamp_path: layout.stamp(primary.sha256.as_str()),
            chakra_link: layout.chakra_link(item),
            model_path: layout.model_link(item),
            tree_path: layout.tree(item),
            ref_path: layout.reference(item),
            files,
        }
    }
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let (config, index) = args.config.load()?;
    let plan = plan(&config, &index)?;
    let layout = Layout::new(&config);
    if args.json {
        let items = plan.items.iter().map(|item| JsonItem::of(&layout, item)).collect();
        let json =
            serde_json::to_string_pretty(&Json { items }).map_err(|e| Failure::new(Status::IoErr, e))?;
        println!("{json}");
        return Ok(Status::Success);
    }
    println!(
        "{} models, {} in all, from {}",
        plan.items.len(),
        ByteSize(plan.total_bytes()).display().iec(),
        index.path.display()
    );
    for item in &plan.items {
        println!("\n{} {} ({})", item.id, item.version, item.chakra);
        let size = item.size_bytes();
        println!("  source   {}", item.source);
        println!("  url      {}", item.source.url());
        if let Some(commit) = &item.commit {
            println!("  commit   {commit}");
        }
        println!("  sha256   {}", item.primary().sha256);
        println!("  size     {} ({size} bytes)", ByteSize(size).display().iec());
        if item.files.len() > 1 {
            println!("  folder   {}", layout.model_link(item).display());
            for file in &item.files {
                println!("  file     {} ({} bytes, sha256 {})", file.path, file.size_bytes, file.sha256);
            }
        } else {
            println!("  blob     {}", layout.blob(item, item.primary()).display());
        }
        println!("  publish  {}", layout.store_path(item).display());
    }
    Ok(Status::Success)
}
