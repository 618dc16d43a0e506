//! Command-line glue: the clap definitions, one file per subcommand, and the mapping of
//! failures to exit statuses. No logic of its own beyond reading arguments and printing.

mod edit;
mod entry;
mod gc;
mod index_lock;
mod lock;
mod plan;
mod run;
mod status;
mod sync;
mod validate;
mod wait;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::index::{Index, IndexError};
use crate::plan::PlanErrors;

/// Put verified model files from the Hugging Face Hub on this host.
#[derive(Debug, Parser)]
#[command(name = "models-fetch", version)]
pub struct Cli {
    /// Where log lines go: `auto` is the journal when stderr is the journal (`JOURNAL_STREAM`
    /// set, as under systemd), stderr otherwise. `MODELS_FETCH_LOG` sets the level.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log: LogTarget,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogTarget {
    Auto,
    Journald,
    Stderr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check an index file against the schema and the rules a schema cannot state.
    Validate(validate::Args),
    /// Hash a model file, or every file of a model folder, and print its index entry
    /// (optionally writing it into an index).
    Entry(Box<entry::Args>),
    /// Pin a Hub model (its commit and every selected file's sha256) into an index entry from
    /// the Hub's own metadata; with --update, re-pin an entry to its revision's newest commit.
    Lock(Box<lock::Args>),
    /// Show what would be fetched, from where, and where it would be published (no network).
    Plan(plan::Args),
    /// Fetch, verify and publish every deployed model, then exit.
    Sync(sync::Args),
    /// Run as a service: READY at once, then fetch and keep every model published.
    Run(run::Args),
    /// Show every deployed model's state and the daemon's pid.
    Status(status::Args),
    /// Block until models are published and verified (for consumer units).
    Wait(wait::Args),
    /// Remove what is no longer deployed nor kept (`keep_previous`), as the daemon does after
    /// every pass; only what models-fetch wrote.
    Gc(gc::Args),
}

/// The config file flag shared by the subcommands that read the daemon's config.
#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The daemon's config file: TOML, or JSON when its name ends in `.json`. Without the flag
    /// or MODELS_FETCH_CONFIG: /etc/models-fetch/config.toml, or /etc/models-fetch/config.json
    /// (the NixOS module's) when only that exists.
    #[arg(long, value_name = "FILE", env = "MODELS_FETCH_CONFIG", default_value_os_t = crate::config::default_path())]
    config: PathBuf,
}

impl ConfigArg {
    /// The config and the index it names, both checked.
    fn load(&self) -> Result<(Config, Index), Failure> {
        let config = Config::load(&self.config)?;
        let index = Index::load(&config.index)?;
        Ok((config, index))
    }
}

impl Cli {
    pub fn run(self) -> Result<Status, Failure> {
        let default_level = if matches!(self.command, Command::Run(_)) { "info" } else { "warn" };
        init_logging(self.log, default_level);
        match self.command {
            Command::Validate(args) => validate::run(&args),
            Command::Entry(args) => entry::run(&args),
            Command::Lock(args) => lock::run(&args),
            Command::Plan(args) => plan::run(&args),
            Command::Sync(args) => sync::run(&args),
            Command::Run(args) => run::run(&args),
            Command::Status(args) => status::run(&args),
            Command::Wait(args) => wait::run(&args),
            Command::Gc(args) => gc::run(&args),
        }
    }
}

/// Exit statuses, from sysexits.h where one fits, so a unit can name the permanent ones in
/// `RestartPreventExitStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    /// `validate` found problems; `lock --update`: nothing changed.
    Invalid = 1,
    /// EX_DATAERR: the index is invalid, or a file does not match it.
    DataErr = 65,
    /// EX_NOINPUT: an input file is missing or unreadable.
    NoInput = 66,
    /// EX_IOERR: writing failed (disk full, permissions).
    IoErr = 74,
    /// EX_TEMPFAIL: a transient failure (network, another instance running); try again later.
    TempFail = 75,
    /// EX_CONFIG: the config is invalid or cannot be deployed with the index.
    Config = 78,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// An error on its way to the user, with the exit status it ends in.
#[derive(Debug)]
pub struct Failure {
    status: Status,
    error: anyhow::Error,
}

impl Failure {
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Self {
        Self { status, error: error.into() }
    }

    pub fn status(&self) -> Status {
        self.status
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each error of this crate already names its cause; the chain would repeat it.
        write!(f, "{}", self.error)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::new(Status::Config, e)
    }
}

impl From<IndexError> for Failure {
    fn from(e: IndexError) -> Self {
        let status = match e {
            IndexError::Read { .. } => Status::NoInput,
            _ => Status::DataErr,
        };
        Self::new(status, e)
    }
}

impl From<PlanErrors> for Failure {
    fn from(e: PlanErrors) -> Self {
        Self::new(Status::Config, e)
    }
}

/// The cache lock of `layout`, so no other instance works on the same directories: held by
/// another one is a temporary failure (75), an I/O error 74.
fn cache_lock(layout: &crate::layout::Layout) -> Result<crate::publish::lock::CacheLock, Failure> {
    use crate::publish::lock::{CacheLock, LockError};
    CacheLock::acquire(&layout.lock_paths()).map_err(|e| match e {
        LockError::Held { .. } => Failure::new(Status::TempFail, e),
        LockError::Io { .. } => Failure::new(Status::IoErr, e),
    })
}

/// The runtime of `sync` and `run`: one thread. Receiving is light (the hashing and writing
/// of every download run on threads of their own), and one thread saves the cross-thread
/// wake-ups a work-stealing pool makes per network read.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Status::IoErr, e))
}

/// Sets up logging: journald (structured fields, no prefix, so `MODEL_ID` arrives as is) or
/// human-readable lines on stderr. `MODELS_FETCH_LOG` (an env-filter, e.g. `debug`) sets the
/// level.
fn init_logging(target: LogTarget, default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MODELS_FETCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let journald = match target {
        LogTarget::Journald => true,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
        LogTarget::Stderr => false,
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(None).with_syslog_identifier("models-fetch".to_owned());
                tracing_subscriber::registry().with(filter).with(layer).init();
                return;
            }
            Err(e) => eprintln!("models-fetch: cannot log to the journal ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
