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
    /// The URL of its own source.
    source: String,
    sha256: String,
    size_bytes: u64,
    /// The file in the download cache, named by its sha256.
    blob_path: PathBuf,
    /// The stable path consumers read.
    store_path: PathBuf,
    /// The partial download, while one is in flight.
    partial_path: PathBuf,
    /// The byte-range sidecar of a parallel download.
    sidecar_path: PathBuf,
    /// The record that the blob was verified.
    stamp_path: PathBuf,
    /// The link in `by-chakra/`.
    chakra_link: PathBuf,
}

impl JsonItem {
    fn of(layout: &Layout, item: &Item) -> Self {
        Self {
            id: item.id.to_string(),
            version: item.version.clone(),
            chakra: item.chakra.clone(),
            source: item.source.url(),
            sha256: item.sha256.to_string(),
            size_bytes: item.size_bytes,
            blob_path: layout.blob(item),
            store_path: layout.store_path(item),
            partial_path: layout.partial(item),
            sidecar_path: layout.sidecar(item),
            stamp_path: layout.stamp(item),
            chakra_link: layout.chakra_link(item),
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
        println!("  source   {}", item.source);
        println!("  url      {}", item.source.url());
        println!("  sha256   {}", item.sha256);
        println!("  size     {} ({} bytes)", ByteSize(item.size_bytes).display().iec(), item.size_bytes);
        println!("  blob     {}", layout.blob(item).display());
        println!("  publish  {}", layout.store_path(item).display());
    }
    Ok(Status::Success)
}
