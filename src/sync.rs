//! One pass over the plan: for each model, check what is on disk (no network when it is
//! published and intact), otherwise fetch it from its sources in order, verify, publish.
//! Models run with bounded parallelism; the outcome of each is reported, never just the first
//! failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::Instrument;

use crate::config::Config;
use crate::digest::hash_reader;
use crate::fetch::error::Cause;
use crate::fetch::{self, FetchError, Http, Kind, Origin, Symptom, retry};
use crate::index::Source;
use crate::item::Item;
use crate::layout::Layout;
use crate::plan::Plan;
use crate::publish::{self, State};
use crate::secret::{Token, TokenError};
use crate::verify::Expected;

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
    /// `position` bytes of `item` are in its partial file.
    fn progress(&self, item: &Item, position: u64);
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
    reporter: Arc<dyn Reporter>,
    /// One model at a time per blob: two ids may name the same file, and must not write the
    /// same partial file at once.
    blobs: std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
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
            reporter,
            blobs: std::sync::Mutex::default(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
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
                sha256 = %item.sha256,
                bytes = f.transferred,
                duration_ms = u64::try_from(f.elapsed.as_millis()).unwrap_or(u64::MAX),
                source = %f.origin,
                "published {} ({} bytes verified)", self.layout.store_path(item).display(), item.size_bytes
            ),
            Outcome::Published { fetched: None } => {
                tracing::debug!(sha256 = %item.sha256, "already published and intact");
            }
            Outcome::Failed { kind, reason, .. } => {
                tracing::error!(sha256 = %item.sha256, error_kind = kind.name(), "failed: {reason}");
            }
        }
        outcome
    }

    async fn sync_one(&self, item: &Item) -> Outcome {
        let blob_lock =
            self.blobs.lock().expect("blobs lock").entry(self.layout.blob(item)).or_default().clone();
        let _blob = blob_lock.lock().await;
        match self.reuse(item).await {
            Ok(true) => return Outcome::Published { fetched: None },
            Ok(false) => {}
            Err(reason) => return Outcome::Failed { kind: Kind::Local, reason, symptom: Symptom::DiskError },
        }
        let partial = self.layout.partial(item);
        if let Err(e) = publish::prepare_item(&self.layout, item) {
            return Outcome::Failed {
                kind: Kind::Local,
                reason: format!("cannot create the cache folder: {e}"),
                symptom: Symptom::of_io(&e),
            };
        }
        if let Err(e) = enough_space(&partial, item.size_bytes) {
            return Outcome::Failed { kind: Kind::Local, reason: e.to_string(), symptom: e.symptom() };
        }
        self.reporter.started(item);
        let expected = Expected { sha256: item.sha256.clone(), size: item.size_bytes };
        let progress = |position| self.reporter.progress(item, position);
        let mut failures: Vec<(String, FetchError)> = Vec::new();
        for origin in self.origins(item) {
            let started = Instant::now();
            tracing::debug!(source = %origin.describe(), "fetching");
            match fetch::fetch(&self.http, &self.policy, &origin, &partial, &expected, &progress).await {
                Ok(fetched) => {
                    let publish = {
                        let (layout, item) = (self.layout.clone(), item.clone());
                        let commit = fetched.commit.clone();
                        tokio::task::spawn_blocking(move || {
                            publish::publish(&layout, &item, commit.as_deref())
                        })
                    };
                    return match publish.await {
                        Ok(Ok(())) => Outcome::Published {
                            fetched: Some(FetchedFrom {
                                origin: origin.describe(),
                                transferred: fetched.transferred,
                                elapsed: started.elapsed(),
                            }),
                        },
                        Ok(Err(e)) => Outcome::Failed {
                            kind: Kind::Local,
                            reason: format!("cannot publish: {e}"),
                            symptom: Symptom::of_io(&e),
                        },
                        Err(e) => Outcome::Failed {
                            kind: Kind::Local,
                            reason: format!("cannot publish: {e}"),
                            symptom: Symptom::DiskError,
                        },
                    };
                }
                Err(error) => {
                    let lied = if error.kind() == Kind::Integrity {
                        "this source served wrong bytes (not published): "
                    } else {
                        ""
                    };
                    tracing::warn!(source = %origin.describe(), error_kind = error.kind_name(), "{lied}{error}");
                    let local = error.kind() == Kind::Local;
                    failures.push((origin.describe(), error));
                    if local {
                        break;
                    }
                }
            }
        }
        failed(failures)
    }

    /// The origins of `item`, in order: its own source, then the mirrors (or the mirrors first).
    fn origins(&self, item: &Item) -> Vec<Origin> {
        let own = match &item.source {
            Source::Hub(hub) => Origin::Hub(hub.clone()),
            Source::Url(url) => Origin::Url(url.clone()),
        };
        let mirrors = self.mirrors.iter().cloned().map(Origin::Mirror);
        if self.mirrors_first {
            mirrors.chain(std::iter::once(own)).collect()
        } else {
            std::iter::once(own).chain(mirrors).collect()
        }
    }

    /// Uses what is on disk when it is the verified file: `Ok(true)` when the model is
    /// published now, with no network request.
    async fn reuse(&self, item: &Item) -> Result<bool, String> {
        let (layout, item, verify) = (self.layout.clone(), item.clone(), self.verify_existing);
        tokio::task::spawn_blocking(move || match publish::state(&layout, &item) {
            State::Published => Ok(true),
            State::NeedsLinks { commit } => {
                publish::link(&layout, &item, commit.as_deref()).map_err(|e| format!("cannot link: {e}"))?;
                Ok(true)
            }
            State::Unverified => {
                // A file this program did not verify (another tool's download, or changed since):
                // keep it only when it is the indexed file.
                if !on_disk_is_indexed(&layout.blob(&item), &item, verify)? {
                    return Ok(false);
                }
                let commit = known_commit(&layout, &item);
                publish::restamp(&layout, &item, commit.as_deref())
                    .map_err(|e| format!("cannot stamp: {e}"))?;
                publish::link(&layout, &item, commit.as_deref()).map_err(|e| format!("cannot link: {e}"))?;
                Ok(true)
            }
            State::Missing => Ok(false),
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Whether the unstamped file at `blob`, the blob's name, is the indexed one: hashed, or with
/// `verify_checksums = false` trusted by its size.
fn on_disk_is_indexed(blob: &Path, item: &Item, verify: bool) -> Result<bool, String> {
    if !verify {
        let size = std::fs::metadata(blob).map_or(0, |m| m.len());
        if size == item.size_bytes {
            tracing::warn!(model_id = %item.id, blob = %blob.display(),
                "verify_checksums = false: trusting the file on disk by its size, without hashing it");
        }
        return Ok(size == item.size_bytes);
    }
    let file = crate::fsx::open_regular(blob).map_err(|e| e.to_string())?;
    let (sha256, size) = hash_reader(file).map_err(|e| e.to_string())?;
    if sha256 != item.sha256 || size != item.size_bytes {
        tracing::warn!(model_id = %item.id, blob = %blob.display(), %sha256,
            "the file at the blob's name is not the indexed one; fetching it again");
        return Ok(false);
    }
    Ok(true)
}

/// The commit a Hub file's revision points at, as far as the disk knows (no network).
fn known_commit(layout: &Layout, item: &Item) -> Option<String> {
    let Source::Hub(hub) = &item.source else { return None };
    if hub.revision.len() == 40 && hub.revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(hub.revision.clone());
    }
    crate::fsx::read_bounded_string(&layout.reference(hub), crate::fsx::REF).ok().filter(|c| c.len() == 40)
}

/// Every origin failed: the outcome names each one's reason; the kind is the gravest.
fn failed(failures: Vec<(String, FetchError)>) -> Outcome {
    let gravest = failures.iter().map(|(_, e)| e).max_by_key(|e| match e.kind() {
        Kind::Transient => 0,
        Kind::Permanent => 1,
        Kind::Integrity => 2,
        Kind::Local => 3,
    });
    let (kind, symptom) = gravest.map_or((Kind::Permanent, Symptom::Refused), |e| (e.kind(), e.symptom()));
    let reason = match failures.as_slice() {
        [(_, only)] => only.to_string(),
        many => many.iter().map(|(origin, e)| format!("{origin}: {e}")).collect::<Vec<_>>().join("; "),
    };
    Outcome::Failed { kind, reason, symptom }
}

/// Refuses to start a download the disk cannot hold (the partial's bytes already count).
fn enough_space(partial: &Path, size: u64) -> Result<(), FetchError> {
    let dir = partial.parent().unwrap_or(Path::new("."));
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(FetchError::io(format!("cannot create {}", dir.display()), e));
    }
    let have = crate::fsx::regular_len(partial);
    let need = size.saturating_sub(have) + SPACE_MARGIN;
    match fs4::available_space(dir) {
        Ok(free) if free < need => Err(Cause::NoSpace { dir: dir.display().to_string(), free, need }.into()),
        _ => Ok(()),
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
