//! `models-fetch wait [--config FILE] [--timeout DUR] [ID...]`: blocks until the given models
//! (default: every deployed one) are published and verified; fails at once when one has failed
//! for good (not a transient failure). For a consumer unit's `ExecStartPre=`.

use std::time::{Duration, Instant};

use super::{ConfigArg, Failure, Status};
use crate::daemon::state::StateFile;
use crate::item::Item;
use crate::layout::Layout;
use crate::plan::plan;
use crate::publish::{self, State};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Give up after this long (e.g. `10m`); default: wait for ever.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Model ids to wait for (default: every deployed model).
    ids: Vec<String>,
}

const POLL: Duration = Duration::from_millis(250);

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let (config, index) = args.config.load()?;
    let plan = plan(&config, &index)?;
    let mut wanted: Vec<&Item> = plan.items.iter().collect();
    if !args.ids.is_empty() {
        if let Some(unknown) =
            args.ids.iter().find(|id| !plan.items.iter().any(|i| i.id.as_str() == id.as_str()))
        {
            return Err(Failure::new(
                Status::Config,
                anyhow::anyhow!("'{unknown}' is not a deployed model of {}", args.config.config.display()),
            ));
        }
        wanted.retain(|item| args.ids.iter().any(|id| id == item.id.as_str()));
    }
    let layout = Layout::new(&config);
    let started = Instant::now();
    // The last unreadable state file warned about: once, not every poll.
    let mut warned: Option<String> = None;
    loop {
        let missing: Vec<&Item> =
            wanted.iter().copied().filter(|item| publish::state(&layout, item) != State::Published).collect();
        if missing.is_empty() {
            println!("{} models ready", wanted.len());
            return Ok(Status::Success);
        }
        // Never blocks: a FIFO or a device at the state file's name is refused at once (the wait
        // goes on, on what the disk says, until its timeout).
        let file = StateFile::read(&layout.state_file()).unwrap_or_else(|e| {
            if warned.as_ref() != Some(&e) {
                tracing::warn!("{e}; waiting on what the disk says");
                warned = Some(e);
            }
            None
        });
        if let Some(file) = file {
            for item in &missing {
                if let Some(m) = file.models.get(item.id.as_str())
                    && m.is_of(item)
                    && m.failed_for_good()
                {
                    return Err(Failure::new(
                        Status::DataErr,
                        anyhow::anyhow!(
                            "{} failed ({}): {}",
                            item.id,
                            m.error_kind.as_deref().unwrap_or("error"),
                            m.last_error.as_deref().unwrap_or("see the daemon's journal")
                        ),
                    ));
                }
            }
        }
        if args.timeout.is_some_and(|t| started.elapsed() >= t) {
            let ids: Vec<String> = missing.iter().map(|i| i.id.to_string()).collect();
            return Err(Failure::new(
                Status::TempFail,
                anyhow::anyhow!(
                    "timed out after {} waiting for: {}",
                    humantime::format_duration(args.timeout.unwrap_or_default()),
                    ids.join(", ")
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}
