//! `models-fetch sync --config FILE`: fetch, verify and publish every model of the plan, then
//! exit. Exit 0 only when every deployed model is published and verified.

use std::sync::Arc;

use super::{ConfigArg, Failure, Status};
use crate::fetch::Kind;
use crate::layout::Layout;
use crate::plan::plan;
use crate::report;
use crate::sync::{Engine, Outcome, Reporter};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let (config, index) = args.config.load()?;
    let plan = plan(&config, &index)?;
    let _lock = super::cache_lock(&Layout::new(&config))?;
    if !config.verify_checksums {
        tracing::warn!(
            "verify_checksums = false: files already on disk that models-fetch did not verify are trusted by size; downloads are still verified"
        );
    }
    let reporter: Arc<dyn Reporter> = report::for_stderr().into();
    let engine = Engine::new(&config, reporter)
        .map_err(|e| Failure::new(Status::Config, anyhow::anyhow!(e)))?
        .deploying(&plan);
    let runtime = super::runtime()?;
    let outcomes = runtime.block_on(engine.sync(&plan));
    println!("{}", report::summary(engine.layout(), &plan.items, &outcomes));
    if config.prune {
        let removed = crate::lifecycle::gc(engine.layout(), &plan.items, config.keep_previous, false);
        if !removed.is_empty() {
            print!("{}", super::gc::render(&removed, false));
        }
    }

    let failed: Vec<String> = plan
        .items
        .iter()
        .zip(&outcomes)
        .filter_map(|(item, o)| match o {
            Outcome::Failed { reason, .. } => Some(format!("  {}: {reason}", item.id)),
            Outcome::Published { .. } => None,
        })
        .collect();
    if failed.is_empty() {
        return Ok(Status::Success);
    }
    let kinds = outcomes.iter().filter_map(|o| match o {
        Outcome::Failed { kind, .. } => Some(*kind),
        Outcome::Published { .. } => None,
    });
    let status = kinds.fold(Status::TempFail, |status, kind| match (status, kind) {
        (Status::IoErr, _) | (_, Kind::Local) => Status::IoErr,
        (Status::DataErr, _) | (_, Kind::Permanent | Kind::Integrity) => Status::DataErr,
        _ => Status::TempFail,
    });
    Err(Failure::new(
        status,
        anyhow::anyhow!("{} of {} models failed:\n{}", failed.len(), plan.items.len(), failed.join("\n")),
    ))
}
