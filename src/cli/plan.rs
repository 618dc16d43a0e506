//! `models-fetch plan --config FILE`: what would be fetched, from where, and where it would be
//! published. Reads the config and the index only; no network.

use bytesize::ByteSize;

use super::{ConfigArg, Failure, Status};
use crate::plan::plan;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let (config, index) = args.config.load()?;
    let plan = plan(&config, &index)?;
    if args.json {
        let json = serde_json::to_string_pretty(&plan).map_err(|e| Failure::new(Status::IoErr, e))?;
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
        println!("  blob     {}", item.blob_path.display());
        println!("  publish  {}", item.store_path.display());
    }
    Ok(Status::Success)
}
