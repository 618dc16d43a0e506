//! models-fetch puts machine-learning model files on a host safely: every file named in the
//! model index is fetched, checked against its SHA-256 and size, and published atomically, so
//! no reader ever sees a partial or wrong file.
//!
//! Data flows one way, one module per stage:
//! `config` (the daemon's TOML) -> `index` (the model index and its schema) -> `plan` (what to
//! fetch, as `item`s) -> fetch -> verify -> publish -> report; `layout` says where every file
//! lives; `lifecycle` records what was published and gives back what is no longer needed. `digest` holds the SHA-256 type and streaming hashing; `cli` is the command-line glue.
//!
//! Nothing here is a library for others: every module is `pub(crate)`. The binary enters
//! through [`run`]; the fuzz targets (`fuzz/`, and their corpus replayed by `tests/it`) reach
//! what they check through [`fuzzing`], and only that.

pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod digest;
pub(crate) mod fetch;
pub(crate) mod fsx;
pub(crate) mod hub;
pub(crate) mod index;
pub(crate) mod item;
pub(crate) mod layout;
pub(crate) mod lifecycle;
pub(crate) mod pin;
pub(crate) mod plan;
pub(crate) mod publish;
pub(crate) mod report;
pub(crate) mod secret;
pub(crate) mod sink;
pub(crate) mod sync;
pub(crate) mod verify;

/// The `models-fetch` command: parse the arguments, run the subcommand, map the outcome to an
/// exit status (sysexits, see `cli::Status`).
pub fn run() -> std::process::ExitCode {
    let cli = <cli::Cli as clap::Parser>::parse();
    match cli.run() {
        Ok(status) => status.into(),
        Err(failure) => {
            eprintln!("models-fetch: {failure:#}");
            failure.status().into()
        }
    }
}

/// What the fuzz targets check, and nothing else: the parsers of untrusted text (index,
/// config, HTTP headers), the path checks, the plan and the layout it is placed by, redaction.
pub mod fuzzing {
    pub use crate::config::{Config, ConfigError};
    pub use crate::fetch::http::{content_range_is, content_range_matches, normalize_etag};
    pub use crate::fetch::retry::{MAX_DELAY, Policy, parse_rate_limit, parse_retry_after};
    pub use crate::index::{Index, Source, unsafe_path_reason};
    pub use crate::item::Item;
    pub use crate::layout::Layout;
    pub use crate::plan::{Plan, plan};
    pub use crate::secret::redact;
}
