//! `models-fetch run`: the long-running service. Startup checks the config, the index and what
//! is on disk (stamps, no hashing, no network), takes the cache lock and says READY; then one
//! task per model brings it to published and re-checks it on an interval. SIGHUP re-reads
//! everything and applies the difference (downloads still wanted keep running); SIGTERM stops
//! within seconds, partial files kept for resume.

mod gc;
pub mod notify;
pub mod state;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::fetch::Kind;
use crate::index::{Index, IndexError};
use crate::item::Item;
use crate::layout::Layout;
use crate::plan::{PlanErrors, plan};
use crate::publish::lock::{CacheLock, LockError};
use crate::publish::{self, State};
use crate::sync::{Engine, Outcome, Reporter};
use notify::Notifier;
use state::{ModelState, Phase, StateFile, status_line, unix_now};
use writer::{Snapshot, Writer};

/// Why the daemon could not start (before READY) or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Plan(#[from] PlanErrors),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Setup(String),
}

/// Everything derived from one reading of the config: replaced whole on reload.
struct Generation {
    config: Config,
    items: Vec<Item>,
    engine: Arc<Engine>,
}

impl Generation {
    fn load(config_path: &Path, shared: &Arc<Shared>) -> Result<Self, DaemonError> {
        let config = Config::load(config_path)?;
        let index = Index::load(&config.index)?;
        let plan = plan(&config, &index)?;
        let reporter: Arc<dyn Reporter> = shared.clone();
        let engine = Engine::new(&config, reporter).map_err(DaemonError::Setup)?.deploying(&plan);
        Ok(Self { config, items: plan.items, engine: Arc::new(engine) })
    }
}

/// What the tasks and the supervisor share: every model's state.
struct Shared {
    models: Mutex<BTreeMap<String, ModelState>>,
    rates: Mutex<HashMap<String, (Instant, u64)>>,
    gc: Arc<gc::Collector>,
}

impl Shared {
    fn update(&self, id: &str, change: impl FnOnce(&mut ModelState)) {
        if let Some(model) = self.models.lock().expect("models lock").get_mut(id) {
            change(model);
            model.updated_at = unix_now();
        }
    }
}

impl Reporter for Shared {
    fn started(&self, item: &Item) {
        self.rates.lock().expect("rates lock").insert(item.id.to_string(), (Instant::now(), 0));
        self.update(item.id.as_str(), |m| {
            m.state = Phase::Fetching;
            m.rate = 0;
        });
    }

    fn progress(&self, item: &Item, position: u64) {
        let rate = {
            let mut rates = self.rates.lock().expect("rates lock");
            let (since, from) = rates.entry(item.id.to_string()).or_insert((Instant::now(), position));
            let secs = since.elapsed().as_secs_f64();
            if secs > 0.5 { (position.saturating_sub(*from) as f64 / secs) as u64 } else { 0 }
        };
        self.update(item.id.as_str(), |m| {
            m.bytes = position;
            if rate > 0 {
                m.rate = rate;
            }
        });
    }

    fn files_done(&self, item: &Item, done: usize) {
        self.update(item.id.as_str(), |m| m.files_done = done);
    }

    fn finished(&self, _item: &Item, _outcome: &Outcome) {}
}

/// What every model task takes from the current generation; replaced on reload, which also
/// wakes every waiting task (a failed model is retried at once, with the new token and
/// settings; a ready one is re-checked from disk).
struct TaskSettings {
    engine: Arc<Engine>,
    recheck: Duration,
    rehash: Option<Duration>,
    keep_previous: usize,
    prune: bool,
}

impl TaskSettings {
    fn of(generation: &Generation) -> Arc<Self> {
        Arc::new(Self {
            engine: generation.engine.clone(),
            recheck: generation.config.recheck_interval,
            rehash: generation.config.rehash_interval.filter(|_| generation.config.verify_checksums),
            keep_previous: generation.config.keep_previous,
            prune: generation.config.prune,
        })
    }
}

/// What a model task is for: the item (what to fetch, what it must hash to) and the layout
/// (where it goes). A reload keeps a running task only when its key compares equal, a derived
/// comparison, so no field can be left out of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskKey {
    item: Item,
    layout: Layout,
}

impl TaskKey {
    fn new(item: &Item, layout: &Layout) -> Self {
        Self { item: item.clone(), layout: layout.clone() }
    }

    /// Whether the task for this key keeps running under a plan of `items` placed by `layout`.
    fn kept(&self, items: &[Item], layout: &Layout) -> bool {
        items.iter().any(|item| *self == Self::new(item, layout))
    }
}

/// A running model task and what it was started for.
struct Task {
    key: TaskKey,
    handle: JoinHandle<()>,
}

/// Runs the service until SIGTERM/SIGINT. Errors before READY are returned (the caller maps
/// them to exit statuses); after READY, failures are per model and the service keeps running.
pub async fn run(config_path: PathBuf, notifier: Arc<dyn Notifier>) -> Result<(), DaemonError> {
    let shared =
        Arc::new(Shared { models: Mutex::default(), rates: Mutex::default(), gc: Default::default() });
    let mut generation = Generation::load(&config_path, &shared)?;
    let mut layout = generation.engine.layout().clone();
    let mut lock = CacheLock::acquire(&layout.lock_paths())?;
    let writer =
        Writer::spawn().map_err(|e| DaemonError::Setup(format!("cannot start the state writer: {e}")))?;
    publish::prepare(&layout)
        .map_err(|e| DaemonError::Setup(format!("cannot create {}: {e}", layout.cache_dir().display())))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Setup(e.to_string()))?;

    publish::sweep(&layout, &generation.items);
    reset_models(&shared, &layout, &generation.items);
    let started_at = unix_now();
    let status = status_line(&shared.models.lock().expect("models lock"));
    notifier.ready(&status);
    tracing::info!(models = generation.items.len(), "ready: {status}");

    let heartbeat = Arc::new(AtomicU64::new(0));
    notify::spawn_watchdog(notifier.clone(), heartbeat.clone());
    let tick =
        sd_notify::watchdog_enabled().map_or(Duration::from_secs(1), |d| (d / 4).min(Duration::from_secs(1)));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (settings, _) = tokio::sync::watch::channel(TaskSettings::of(&generation));
    let mut tasks: HashMap<String, Task> = HashMap::new();
    spawn_missing(&mut tasks, &generation, &shared, &settings);
    let gc_task = gc::spawn(shared.gc.clone(), settings.subscribe());
    shared.gc.wake();
    let mut last_written: Option<Written> = None;

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                heartbeat.fetch_add(1, Ordering::Relaxed);
                publish_state(&shared, &generation, &notifier, &writer, started_at, &mut last_written);
            }
            _ = hangup.recv() => {
                notifier.reloading();
                match Generation::load(&config_path, &shared) {
                    Ok(next) => {
                        let next_layout = next.engine.layout().clone();
                        if next_layout.lock_paths() != layout.lock_paths() {
                            match CacheLock::acquire(&next_layout.lock_paths()) {
                                Ok(next_lock) => lock = next_lock,
                                Err(e) => {
                                    reload_failed(&notifier, &shared, &e.to_string());
                                    continue;
                                }
                            }
                            if let Err(e) = publish::prepare(&next_layout) {
                                reload_failed(&notifier, &shared, &e.to_string());
                                continue;
                            }
                        }
                        layout = next_layout;
                        publish::sweep(&layout, &next.items);
                        apply(&mut tasks, &next, &shared, &layout);
                        generation = next;
                        settings.send_replace(TaskSettings::of(&generation));
                        spawn_missing(&mut tasks, &generation, &shared, &settings);
                        shared.gc.wake();
                        let status = status_line(&shared.models.lock().expect("models lock"));
                        tracing::info!(models = generation.items.len(), "reloaded: {status}");
                        notifier.ready(&status);
                    }
                    Err(e) => reload_failed(&notifier, &shared, &e.to_string()),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    notifier.stopping();
    tracing::info!("stopping; partial downloads are kept for resume");
    gc_task.abort();
    for task in tasks.values() {
        task.handle.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for (_, task) in tasks.drain() {
            let _ = task.handle.await;
        }
    })
    .await;
    publish_state(&shared, &generation, &notifier, &writer, started_at, &mut None);
    // The last state is on disk before the lock is given up and the process ends.
    let _ = tokio::task::spawn_blocking(move || writer.close()).await;
    drop(lock);
    Ok(())
}

/// The models of a (new) plan, each as the disk shows it: ready when its stamp and links are in
/// place, pending otherwise. Models no longer deployed are forgotten.
fn reset_models(shared: &Shared, layout: &Layout, items: &[Item]) {
    let mut models = shared.models.lock().expect("models lock");
    let old = std::mem::take(&mut *models);
    for item in items {
        let id = item.id.to_string();
        let path = layout.store_path(item);
        let kept = old.get(&id).filter(|m| m.is_of(item) && m.path == path);
        let model = kept
            .cloned()
            .unwrap_or_else(|| ModelState::new(item, path, publish::state(layout, item) == State::Published));
        models.insert(id, model);
    }
}

/// Applies a new generation: tasks whose model is gone or changed are stopped; the others keep
/// running (a download in flight is not interrupted).
fn apply(tasks: &mut HashMap<String, Task>, next: &Generation, shared: &Shared, layout: &Layout) {
    tasks.retain(|_, task| {
        let same = task.key.kept(&next.items, layout);
        if !same {
            task.handle.abort();
        }
        same
    });
    reset_models(shared, layout, &next.items);
}

fn reload_failed(notifier: &Arc<dyn Notifier>, shared: &Shared, error: &str) {
    tracing::error!("reload rejected, the running config stays in force: {error}");
    let status = status_line(&shared.models.lock().expect("models lock"));
    notifier.ready(&format!("{status} · reload rejected (see journal)"));
}

/// Starts a task for every model that has none.
fn spawn_missing(
    tasks: &mut HashMap<String, Task>,
    generation: &Generation,
    shared: &Arc<Shared>,
    settings: &tokio::sync::watch::Sender<Arc<TaskSettings>>,
) {
    let layout = generation.engine.layout();
    for item in &generation.items {
        if tasks.contains_key(item.id.as_str()) {
            continue;
        }
        let handle = tokio::spawn(model_task(item.clone(), shared.clone(), settings.subscribe()));
        tasks.insert(item.id.to_string(), Task { key: TaskKey::new(item, layout), handle });
    }
}

/// One model, forever: bring it to published; then re-check every `recheck`; on a transient
/// failure retry sooner (doubling from 1 min, at most `recheck`); on any other failure wait for
/// the next re-check or a reload rather than loop. Each pass uses the current settings.
async fn model_task(
    item: Item,
    shared: Arc<Shared>,
    mut settings: tokio::sync::watch::Receiver<Arc<TaskSettings>>,
) {
    let id = item.id.to_string();
    let mut transient_failures = 0u32;
    let mut last_rehash = Instant::now();
    loop {
        let current = settings.borrow_and_update().clone();
        let (engine, recheck) = (&current.engine, current.recheck);
        // The engine bounds the downloads in flight (max_parallel_models).
        let outcome = engine.bring(&item).await;
        let wait = match &outcome {
            Outcome::Published { .. } => {
                transient_failures = 0;
                shared.update(&id, |m| {
                    m.state = Phase::Ready;
                    m.bytes = item.size_bytes();
                    m.files_done = item.files.len();
                    m.rate = 0;
                    m.last_error = None;
                    m.error_kind = None;
                    m.symptom = None;
                    m.next_attempt_at = None;
                    m.ready_at.get_or_insert(unix_now());
                });
                shared.gc.wake();
                recheck
            }
            Outcome::Failed { kind, reason, symptom } => {
                let wait = if kind.is_transient() {
                    transient_failures += 1;
                    Duration::from_secs(30).saturating_mul(1 << transient_failures.min(10)).min(recheck)
                } else {
                    recheck
                };
                shared.update(&id, |m| {
                    m.state = Phase::Failed;
                    m.rate = 0;
                    m.last_error = Some(reason.clone());
                    m.error_kind = Some(kind.name().to_owned());
                    m.symptom = Some(*symptom);
                    m.ready_at = None;
                    m.next_attempt_at = Some(unix_now() + wait.as_secs());
                });
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                transient_failures = 0;
                continue;
            }
        }
        if let Some(every) = current.rehash
            && outcome.is_published()
            && last_rehash.elapsed() >= every
        {
            last_rehash = Instant::now();
            rehash_one(engine, &item).await;
        }
    }
}

/// Hashes a published model's files again; a file that changed loses its stamp, so the next
/// pass fetches it again.
async fn rehash_one(engine: &Engine, item: &Item) {
    let (layout, item) = (engine.layout().clone(), item.clone());
    let _ = tokio::task::spawn_blocking(move || {
        for file in &item.files {
            let good = crate::fsx::open_regular(&layout.blob(&item, file))
                .and_then(crate::digest::hash_reader)
                .is_ok_and(|(sha256, size)| sha256 == file.sha256 && size == file.size_bytes);
            if good {
                tracing::info!(model_id = %item.id, sha256 = %file.sha256, "re-hash: intact");
            } else {
                tracing::error!(model_id = %item.id, sha256 = %file.sha256, file = %file.path,
                    error_kind = Kind::Integrity.name(),
                    "re-hash: the published file changed on disk; fetching it again");
                let _ = std::fs::remove_file(layout.stamp(file.sha256.as_str()));
            }
        }
    })
    .await;
}

/// What was last handed to the writer: the status line, the models, and the cache's size and
/// bytes given back.
type Written = (String, BTreeMap<String, ModelState>, (u64, u64));

/// Sends STATUS and hands the state and metrics files to the writer when something changed.
fn publish_state(
    shared: &Shared,
    generation: &Generation,
    notifier: &Arc<dyn Notifier>,
    writer: &Writer,
    started_at: u64,
    last: &mut Option<Written>,
) {
    let models = shared.models.lock().expect("models lock").clone();
    let status = status_line(&models);
    let sizes = (shared.gc.cache_bytes(), crate::lifecycle::reclaimed_total());
    let changed =
        last.as_ref().is_none_or(|(s, m, z)| *s != status || *z != sizes || !same_ignoring_time(m, &models));
    if !changed {
        return;
    }
    if last.as_ref().is_none_or(|(s, _, _)| *s != status) {
        notifier.status(&status);
    }
    let file = StateFile {
        pid: std::process::id(),
        started_at,
        updated_at: unix_now(),
        status: status.clone(),
        models: models.clone(),
        cache_bytes: shared.gc.cache_bytes(),
        reclaimed_bytes_total: crate::lifecycle::reclaimed_total(),
    };
    writer.send(Snapshot {
        file,
        state_path: generation.engine.layout().state_file(),
        metrics_path: generation.config.metrics_file.clone(),
    });
    *last = Some((status, models, sizes));
}

fn same_ignoring_time(a: &BTreeMap<String, ModelState>, b: &BTreeMap<String, ModelState>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ia, ma), (ib, mb))| {
            ia == ib
                && ma.state == mb.state
                && ma.bytes == mb.bytes
                && ma.files_done == mb.files_done
                && ma.last_error == mb.last_error
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{HubFile, Source};
    use crate::item::ItemFile;

    fn layout_at(cache: &str, store: &str) -> Layout {
        let text = format!("index = \"/i.json\"\ncache_dir = \"{cache}\"\nstore_dir = \"{store}\"\n");
        Layout::new(&Config::parse(Path::new("/c.toml"), &text).expect("config"))
    }

    fn item() -> Item {
        Item {
            id: serde_json::from_str("\"m-1\"").expect("id"),
            version: "1.0.0".into(),
            chakra: "ajna".into(),
            source: Source::Hub(HubFile {
                endpoint: "https://huggingface.co".into(),
                repo: "org/name".into(),
                revision: "main".into(),
                path: "model.bin".into(),
            }),
            commit: None,
            files: vec![ItemFile {
                path: "model.bin".into(),
                name: "model.bin".into(),
                sha256: "ab".repeat(32).parse().expect("sha256"),
                size_bytes: 10,
                git_oid: None,
            }],
            primary: 0,
        }
    }

    #[test]
    fn an_unchanged_task_keeps_running() {
        let (item, layout) = (item(), layout_at("/cache", "/store"));
        let key = TaskKey::new(&item, &layout);
        assert!(key.kept(std::slice::from_ref(&item), &layout));
        assert!(!key.kept(&[], &layout), "a model no longer deployed stops");
    }

    /// Every field of the task changes the decision. The destructuring names every field of
    /// `Item` without `..`: a field added to it does not compile here until it is listed.
    #[test]
    fn changing_any_field_of_the_task_restarts_it() {
        let (base, layout) = (item(), layout_at("/cache", "/store"));
        let key = TaskKey::new(&base, &layout);
        let Item { id: _, version: _, chakra: _, source: _, commit: _, files, primary: _ } = &base;
        let ItemFile { path: _, name: _, sha256: _, size_bytes: _, git_oid: _ } = &files[0];
        let mut changed: Vec<(&str, Item)> = Vec::new();
        let mut change = |field, edit: fn(&mut Item)| {
            let mut item = base.clone();
            edit(&mut item);
            changed.push((field, item));
        };
        change("id", |i| i.id = serde_json::from_str("\"m-2\"").expect("id"));
        change("version", |i| i.version = "1.0.1".into());
        change("chakra", |i| i.chakra = "sahasrara".into());
        change("source", |i| i.source = Source::Url("https://example.org/model.bin".into()));
        change("source revision", |i| {
            if let Source::Hub(hub) = &mut i.source {
                hub.revision = "v2".into();
            }
        });
        change("commit", |i| i.commit = Some("ab".repeat(20)));
        change("sha256", |i| i.files[0].sha256 = "cd".repeat(32).parse().expect("sha256"));
        change("size_bytes", |i| i.files[0].size_bytes = 11);
        change("name", |i| i.files[0].name = "other.bin".into());
        change("path", |i| i.files[0].path = "sub/model.bin".into());
        change("git_oid", |i| i.files[0].git_oid = Some("ef".repeat(20)));
        change("files", |i| {
            let mut more = i.files[0].clone();
            more.path = "config.json".into();
            more.name = "config.json".into();
            i.files.push(more);
        });
        let two = {
            let mut two = base.clone();
            let mut more = two.files[0].clone();
            more.path = "config.json".into();
            more.name = "config.json".into();
            two.files.push(more);
            two
        };
        let two_key = TaskKey::new(&two, &layout);
        let mut other = two.clone();
        other.primary = 1;
        assert!(!two_key.kept(std::slice::from_ref(&other), &layout), "a changed primary kept the task");
        for (field, item) in &changed {
            assert!(!key.kept(std::slice::from_ref(item), &layout), "a changed {field} kept the task");
        }
        for (what, moved) in
            [("cache_dir", layout_at("/cache2", "/store")), ("store_dir", layout_at("/cache", "/s2"))]
        {
            assert!(!key.kept(std::slice::from_ref(&base), &moved), "a changed {what} kept the task");
        }
    }
}
