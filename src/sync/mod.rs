//! One pass over the plan: for each model, check what is on disk (no network when it is
//! published and intact), otherwise fetch its files from their sources in order, verify,
//! publish (`model`). Models run with bounded parallelism; the outcome of each is reported,
//! never just the first failure.

mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::Instrument;

use crate::config::Config;
use crate::fetch::{Http, Kind, Symptom, retry};
use crate::item::Item;
use crate::layout::Layout;
use crate::plan::Plan;
use crate::publish;
use crate::secret::{Token, TokenError};

/// Models checked and resolved at the same time by `sync` (downloads are bounded separately).
const MAX_MODELS_IN_FLIGHT: usize = 64;
/// Free space kept beyond the file itself.
const SPACE_MARGIN: u64 = 16 << 20;
/// The credential name the NixOS unit loads the token under (`LoadCredential=hf-token:...`).
pub const TOKEN_CREDENTIAL: &str = "hf-token";

/// What the engine tells about each model, as it goes: the terminal's progress bars and lines
/// (`crate::report`) and the daemon's state implement it.
pub trait Reporter: Send + Sync {
    /// A download of `item` begins.
    fn started(&self, item: &Item);
    /// `position` bytes of `item`'s files are on disk (verified or in their partial files).
    fn progress(&self, item: &Item, position: u64);
    /// `done` of `item`'s files are verified and in place (published once all are).
    fn files_done(&self, _item: &Item, _done: usize) {}
    /// `item` is done, one way or the other.
    fn finished(&self, item: &Item, outcome: &Outcome);
}

/// How one model ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Published and verified; `fetched` is `None` when nothing had to be fetched.
    Published { fetched: Option<FetchedFrom> },
    Failed {
        kind: Kind,
        reason: String,
        /// The few words the daemon's status line shows.
        symptom: Symptom,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFrom {
    pub origin: String,
    pub transferred: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn is_published(&self) -> bool {
        matches!(self, Outcome::Published { .. })
    }
}

/// Everything a sync pass needs, built once from the config.
pub struct Engine {
    http: Http,
    policy: retry::Policy,
    layout: Layout,
    mirrors: Vec<String>,
    mirrors_first: bool,
    verify_existing: bool,
    /// Files of one model downloaded at once.
    max_parallel_files: usize,
    /// Whether kept versions may be given back to make room (`prune`).
    prune: bool,
    /// Every deployed model (the whole plan, not only the one being fetched): what the
    /// disk-pressure valve must never take.
    deployed: Arc<Vec<Item>>,
    reporter: Arc<dyn Reporter>,
    /// One model at a time per sha256: two ids may name the same file, and must not write the
    /// same partial file at once; the same bytes in two repositories are fetched once.
    blobs: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Engine {
    pub fn new(config: &Config, reporter: Arc<dyn Reporter>) -> Result<Self, String> {
        let token = read_token(config);
        if let Err(e) = &token {
            tracing::warn!("{e}; only public models can be fetched");
        }
        let http = Http::new(config, token)?;
        Ok(Self {
            http,
            policy: retry::Policy {
                max_retries: config.max_retries,
                base_delay: config.retry_base_delay,
                max_time: config.retry_max_time,
            },
            layout: Layout::new(config),
            mirrors: config.mirrors.clone(),
            mirrors_first: config.mirrors_first,
            verify_existing: config.verify_checksums,
            max_parallel_files: config.max_parallel_files,
            prune: config.prune,
            deployed: Arc::default(),
            reporter,
            blobs: std::sync::Mutex::default(),
        })
    }

    /// The engine for the models of `plan`, all of them deployed.
    pub fn deploying(mut self, plan: &Plan) -> Self {
        self.deployed = Arc::new(plan.items.clone());
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The deployed models (`deploying`).
    pub fn deployed(&self) -> Arc<Vec<Item>> {
        self.deployed.clone()
    }

    /// Brings every model of `plan` to published, as far as it can; one outcome per item, in
    /// plan order.
    pub async fn sync(&self, plan: &Plan) -> Vec<Outcome> {
        if let Err(e) = publish::prepare(&self.layout) {
            let reason = format!("cannot create {}: {e}", self.layout.cache_dir().display());
            return plan
                .items
                .iter()
                .map(|_| Outcome::Failed {
                    kind: Kind::Local,
                    reason: reason.clone(),
                    symptom: Symptom::DiskError,
                })
                .collect();
        }
        publish::sweep(&self.layout, &plan.items);
        futures_util::stream::iter(&plan.items)
            .map(|item| async move {
                let outcome = self.bring(item).await;
                self.reporter.finished(item, &outcome);
                outcome
            })
            // Every model starts at once: the disk checks and the Hub's answers for all of them
            // run ahead; the downloads themselves wait for a slot (max_parallel_models).
            .buffered(MAX_MODELS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Brings one model to published: from disk when it is there and intact, else fetched.
    /// Every event inside carries the model's id (`MODEL_ID` in the journal).
    pub async fn bring(&self, item: &Item) -> Outcome {
        let span = tracing::info_span!("model", model_id = %item.id);
        let outcome = self.sync_one(item).instrument(span.clone()).await;
        let _entered = span.enter();
        match &outcome {
            Outcome::Published { fetched: Some(f) } => tracing::info!(
                sha256 = %item.primary().sha256,
                bytes = f.transferred,
                duration_ms = u64::try_from(f.elapsed.as_millis()).unwrap_or(u64::MAX),
                source = %f.origin,
                "published {} ({} bytes verified)", self.layout.store_path(item).display(), item.size_bytes()
            ),
            Outcome::Published { fetched: None } => {
                tracing::debug!(sha256 = %item.primary().sha256, "already published and intact");
            }
            Outcome::Failed { kind, reason, .. } => {
                tracing::error!(sha256 = %item.primary().sha256, error_kind = kind.name(), "failed: {reason}");
            }
        }
        outcome
    }

    async fn sync_one(&self, item: &Item) -> Outcome {
        model::bring(self, item).await
    }
}

/// The token: `token_file`, else the unit's credential `$CREDENTIALS_DIRECTORY/hf-token`, else
/// none. A token file others may read is used, with a warning.
pub fn read_token(config: &Config) -> Result<Option<Token>, TokenError> {
    let path: Option<PathBuf> = config.token_file.clone().or_else(|| {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        Some(Path::new(&dir).join(TOKEN_CREDENTIAL)).filter(|p| p.exists())
    });
    let Some(path) = path else { return Ok(None) };
    let token = Token::read(&path)?;
    if let Ok(meta) = std::fs::metadata(&path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(token_file = %path.display(), "the token file is readable by every user; chmod o-r it");
        }
    }
    Ok(Some(token))
}
