//! `models-fetch gc [--config FILE] [--dry-run]`: removes now what the daemon removes after
//! every pass: the links of models no longer deployed, and every version that is neither
//! deployed nor among the `keep_previous` newest others of its model (only what models-fetch
//! wrote). Prints every path and the bytes it frees (or, dry, would free).

use bytesize::ByteSize;

use super::{ConfigArg, Failure, Status};
use crate::layout::Layout;
use crate::lifecycle::{self, Report};
use crate::plan::plan;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let (config, index) = args.config.load()?;
    let plan = plan(&config, &index)?;
    let layout = Layout::new(&config);
    // A dry run only reads; a real one keeps any other instance (the daemon) out.
    let _lock = if args.dry_run { None } else { Some(super::cache_lock(&layout)?) };
    let report = lifecycle::gc(&layout, &plan.items, config.keep_previous, args.dry_run);
    print!("{}", render(&report, args.dry_run));
    Ok(Status::Success)
}

/// One line per path (what it is, the bytes, the model, the path), then the total.
pub(super) fn render(report: &Report, dry_run: bool) -> String {
    let mut out = String::new();
    for action in &report.actions {
        let bytes = ByteSize(action.bytes).display().iec().to_string();
        out.push_str(&format!(
            "{:14} {:>10}  {}  {}\n",
            action.what.name(),
            bytes,
            action.model,
            action.path.display()
        ));
    }
    let (verb, total) = if dry_run { ("would free", report.freed) } else { ("freed", report.freed) };
    out.push_str(&format!(
        "{} {} ({} bytes) in {} paths\n",
        verb,
        ByteSize(total).display().iec(),
        total,
        report.actions.len()
    ));
    out
}
