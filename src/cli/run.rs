//! `models-fetch run --config FILE`: the service (see `daemon`). Exit statuses before READY:
//! 78 for a bad config (or one the index cannot satisfy), 65 for a bad index, 75 when another
//! instance holds the cache; the unit lists 65 and 78 in `RestartPreventExitStatus`.

use std::sync::Arc;

use super::{ConfigArg, Failure, Status};
use crate::daemon::{self, DaemonError, notify::SdNotify};
use crate::index::IndexError;
use crate::publish::lock::LockError;
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let runtime = super::runtime()?;
    runtime.block_on(daemon::run(args.config.config.clone(), Arc::new(SdNotify))).map_err(|e| {
        let status = match &e {
            DaemonError::Config(_) | DaemonError::Plan(_) => Status::Config,
            // A missing or unreadable index is a config mistake too: no restart helps.
            DaemonError::Index(IndexError::Read { .. }) => Status::Config,
            DaemonError::Index(_) => Status::DataErr,
            DaemonError::Lock(LockError::Held { .. }) => Status::TempFail,
            DaemonError::Lock(LockError::Io { .. }) | DaemonError::Setup(_) => Status::IoErr,
        };
        Failure::new(status, e)
    })?;
    Ok(Status::Success)
}
