//! The one test fixture every integration test builds on (after ripgrep's `tests/util.rs`: a
//! directory per test and a command builder for the binary under test). A [`Site`] is a temp
//! dir with a token file, an index written from a list of [`Model`]s ([`index`]), a config
//! written with the `toml` crate from a table of settings each test may override, and, unless
//! the test brings its own, the in-process Hub and CDN of `origin.rs`. Its commands run
//! `models-fetch` with one environment scrub ([`command`]); where a published file lives is
//! read from `models-fetch plan --json` ([`plan`]), never recomputed by a test. What every
//! published name must hold is checked in [`layout`].
//!
//! Also here, one copy each: reproducible [`data`], [`hex`] and [`sha256_hex`], the repository
//! [`root`], temp dirs and files.

pub mod command;
pub mod index;
pub mod layout;
pub mod plan;
pub mod repo;
pub mod tmpfs;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use sha2::Digest;

pub use command::{
    Pipes, RUN_LIMIT, Run, models_fetch, models_fetch_command, run_with_limit, scrub_env, signal, terminate,
    text, wrapped,
};
pub use index::{AJNA, ANAHATA, FULL, MANIPURA, Model, SEED};
pub use layout::{canonical, walk};
pub use plan::Planned;
pub use repo::{Repo, Storage};

use crate::origin::{Blob, Origin};

/// The Hub token of every site: it must never show up in output, logs or files.
pub const TOKEN: &str = "hf_TestTokenThatMustNeverBePrinted";

/// The repository root (where Cargo.toml is).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("models-fetch-test.").tempdir().expect("temp dir")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `len` reproducible pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// A file the index can name before the Hub has it (no commit yet).
pub fn unpublished(content: Vec<u8>) -> Blob {
    Blob {
        sha256: sha256_hex(&content),
        size: content.len() as u64,
        content: Arc::new(content),
        commit: String::new(),
    }
}

/// Whether this process runs as root (mounts, namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A test's directory: token file, index, config, cache and store, next to an [`Origin`].
pub struct Site {
    dir: tempfile::TempDir,
    origin: Option<Origin>,
    /// The config's settings; [`Site::write_config`] writes them.
    settings: RefCell<toml::Table>,
    /// Indexes written so far, for the version of the next.
    versions: Cell<u32>,
    /// Every model ever written to the index: by id, every sha256 it was given (and the model
    /// as it was then).
    history: RefCell<BTreeMap<&'static str, BTreeMap<String, Model>>>,
    /// What the plan of every config written said, by model id and sha256.
    planned: RefCell<BTreeMap<(String, String), Planned>>,
    /// The plan of the last config written, or why there is none.
    last_plan: RefCell<Result<Vec<Planned>, String>>,
    /// sha256 of files already hashed by the invariant check.
    hashes: RefCell<layout::Hashes>,
}

impl Site {
    /// A plain-http Hub that needs [`TOKEN`].
    pub fn new() -> Self {
        Self::with(Origin::start(Some(TOKEN)))
    }

    /// A site next to `origin` (its CA, if it has one, in `ca_file`).
    pub fn with(origin: Origin) -> Self {
        let site = Self::build(Some(origin));
        if let Some(pem) = site.origin().ca_pem() {
            write(site.dir(), "ca.pem", pem);
            site.set("ca_file", "ca.pem");
        }
        site
    }

    /// A site without the in-process origin; its endpoint is a closed port (for `file://`
    /// mirrors, an origin of the test's own, or tests that never reach the network).
    pub fn offline() -> Self {
        Self::build(None)
    }

    fn build(origin: Option<Origin>) -> Self {
        let dir = temp_dir();
        let token = write(dir.path(), "token", &format!("{TOKEN}\n"));
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod token");
        let endpoint = origin.as_ref().map_or("http://127.0.0.1:9", |o| o.hub_url()).to_owned();
        let (cache, store) = (dir.path().join("cache"), dir.path().join("store"));
        let settings = toml::toml! {
            index = "index.json"
            token_file = "token"
            deployed_models = []
            connect_timeout = "2s"
            stall_timeout = "1s"
            max_retries = 3
            retry_base_delay = "10ms"
            retry_max_time = "20s"
        };
        let site = Site {
            settings: RefCell::new(settings),
            dir,
            origin,
            versions: Cell::new(0),
            history: RefCell::default(),
            planned: RefCell::default(),
            last_plan: RefCell::new(Err("no config written yet".into())),
            hashes: RefCell::default(),
        };
        site.set("cache_dir", cache.display().to_string());
        site.set("store_dir", store.display().to_string());
        site.set("endpoint", endpoint);
        site
    }

    /// The in-process origin; panics on an [`Site::offline`] site.
    pub fn origin(&self) -> &Origin {
        self.origin.as_ref().expect("an offline site has no in-process origin")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    /// Writes `bytes` to `rel` in the site (folders created) and returns the path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("parent dir");
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    pub fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// The configured `cache_dir`.
    pub fn cache(&self) -> PathBuf {
        self.setting_path("cache_dir")
    }

    /// The configured `store_dir`.
    pub fn store(&self) -> PathBuf {
        self.setting_path("store_dir")
    }

    fn setting_path(&self, key: &str) -> PathBuf {
        let settings = self.settings.borrow();
        let value = settings.get(key).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("{key} unset"));
        self.dir().join(value)
    }

    /// Sets a config key for every config written from now on.
    pub fn set(&self, key: &str, value: impl Into<toml::Value>) {
        self.settings.borrow_mut().insert(key.to_owned(), value.into());
    }

    /// Leaves `key` out of every config written from now on.
    pub fn unset(&self, key: &str) {
        self.settings.borrow_mut().remove(key);
    }

    /// Writes the index of `entries` (JSON entries, e.g. [`index::set_entry`]) at a new
    /// version, and a config deploying them all.
    pub fn write_entries(&self, entries: Vec<serde_json::Value>) {
        self.versions.set(self.versions.get() + 1);
        let ids: Vec<String> =
            entries.iter().map(|e| e["id"].as_str().expect("an entry's id").to_owned()).collect();
        self.write_index_json(&index::document_of(entries, &format!("2.{}.0", self.versions.get())));
        self.set("deployed_models", ids);
        self.write_config();
    }

    /// Writes a config deploying `models` (`deployed_models`).
    pub fn deploy(&self, models: &[Model]) {
        self.set("deployed_models", models.iter().map(|m| m.id).collect::<Vec<_>>());
        self.write_config();
    }

    /// Writes `config.toml` from the settings, and reads its plan (`models-fetch plan --json`):
    /// the paths the `assert_` methods and [`Site::paths`] give.
    pub fn write_config(&self) -> PathBuf {
        let config = self.config_with("config.toml", &[]);
        let plan = plan::plan(&config);
        if let Ok(items) = &plan {
            let mut planned = self.planned.borrow_mut();
            for item in items {
                planned.insert((item.id.clone(), item.sha256.clone()), item.clone());
            }
        }
        *self.last_plan.borrow_mut() = plan;
        config
    }

    /// Writes the config `name` from the settings with `changes` on top (a value `None`
    /// leaves the key out), without keeping the changes or reading its plan.
    pub fn config_with(&self, name: &str, changes: &[(&str, Option<toml::Value>)]) -> PathBuf {
        let mut settings = self.settings.borrow().clone();
        for (key, value) in changes {
            match value {
                Some(value) => settings.insert((*key).to_owned(), value.clone()),
                None => settings.remove(*key),
            };
        }
        let text = toml::to_string(&settings).expect("the settings are TOML");
        write(self.dir(), name, &text)
    }

    /// Publishes `content` as `model`'s file on the Hub (an LFS file: redirected to the CDN).
    pub fn serve(&self, model: Model, content: Vec<u8>) -> Blob {
        self.origin().publish(model.repo, model.hub_path(), content)
    }

    /// Serves `content` as `model`'s file, indexes it, syncs and checks it is published: the
    /// version a test then updates or damages.
    pub fn published(&self, model: Model, content: Vec<u8>) -> Blob {
        let blob = self.serve(model, content);
        self.write_index(&[(model, &blob)]);
        self.sync().assert_ok();
        self.assert_published(model, &blob);
        blob
    }

    /// The index document of `models`, at a new version each call.
    pub fn index(&self, models: &[(Model, &Blob)]) -> serde_json::Value {
        self.versions.set(self.versions.get() + 1);
        index::document(models, &format!("2.{}.0", self.versions.get()))
    }

    /// Writes the index of `models` and a config deploying them.
    pub fn write_index(&self, models: &[(Model, &Blob)]) {
        self.write_index_json(&self.index(models));
        {
            let mut history = self.history.borrow_mut();
            for (model, blob) in models {
                history.entry(model.id).or_default().insert(blob.sha256.clone(), *model);
            }
        }
        self.deploy(&models.iter().map(|(m, _)| *m).collect::<Vec<_>>());
    }

    pub fn write_index_json(&self, index: &serde_json::Value) {
        write(self.dir(), "index.json", &serde_json::to_string_pretty(index).expect("index"));
    }

    /// Where `blob` of `model` goes, as the plan of a config naming it said.
    pub fn paths(&self, model: Model, blob: &Blob) -> Planned {
        self.planned_version(model.id, &blob.sha256)
    }

    fn planned_version(&self, id: &str, sha256: &str) -> Planned {
        let key = (id.to_owned(), sha256.to_owned());
        self.planned.borrow().get(&key).cloned().unwrap_or_else(|| {
            panic!("no plan named {id} with sha256 {sha256}; the last plan: {:?}", self.last_plan.borrow())
        })
    }

    /// The plan of the last config written.
    pub fn plan(&self) -> Vec<Planned> {
        self.last_plan.borrow().clone().unwrap_or_else(|e| panic!("the last config has no plan: {e}"))
    }

    /// The last plan's item for `id`.
    pub fn planned(&self, id: &str) -> Planned {
        let plan = self.plan();
        plan.iter()
            .find(|item| item.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in the plan {plan:#?}"))
    }

    /// The stable path consumers read, `{store_dir}/{id}/{filename}`: by the last plan that
    /// named the model.
    pub fn stored(&self, model: Model) -> PathBuf {
        if let Ok(plan) = &*self.last_plan.borrow()
            && let Some(item) = plan.iter().find(|item| item.id == model.id)
        {
            return item.store.clone();
        }
        let planned = self.planned.borrow();
        let mut items = planned.values().filter(|item| item.id == model.id);
        items.next().map(|item| item.store.clone()).unwrap_or_else(|| panic!("no plan named {}", model.id))
    }

    /// `models-fetch ARGS --config CONFIG` in the site, with the scrubbed environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = models_fetch_command();
        command.args(args).arg("--config").arg(self.config()).current_dir(self.dir());
        command
    }

    /// `models-fetch status --json`, which must succeed.
    pub fn status(&self) -> serde_json::Value {
        let output = self.command(&["status", "--json"]).output().expect("models-fetch status runs");
        assert_eq!(output.status.code(), Some(0), "status failed: {}", text(&output));
        serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
    }

    /// `models-fetch sync`; checks that no secret reached the output or a CDN.
    pub fn sync(&self) -> Run {
        self.sync_at(None)
    }

    /// [`Site::sync`] at log level `level` (`MODELS_FETCH_LOG`).
    pub fn sync_at(&self, level: Option<&str>) -> Run {
        let mut command = self.command(&["sync"]);
        if let Some(level) = level {
            command.env("MODELS_FETCH_LOG", level);
        }
        self.checked(run_with_limit(command, RUN_LIMIT, &|| false))
    }

    /// [`Site::sync`], killing the process (SIGKILL) as soon as `kill` says so.
    pub fn sync_killed_when(&self, kill: &dyn Fn() -> bool) -> Run {
        self.checked(run_with_limit(self.command(&["sync"]), RUN_LIMIT, kill))
    }

    fn checked(&self, run: Run) -> Run {
        self.assert_no_secret_in(&run.out, "the output of sync");
        if self.origin.is_some() {
            self.assert_cdn_never_got_the_token();
        }
        run
    }

    /// Starts `models-fetch run` (stderr logging at `level`), its output in `log`.
    pub fn spawn_daemon(&self, level: &str, log: &Path) -> Child {
        let file = std::fs::File::create(log).expect("daemon log");
        let mut command = self.command(&["--log", "stderr", "run"]);
        command.env("MODELS_FETCH_LOG", level);
        command.stdout(file.try_clone().expect("log handle")).stderr(Stdio::from(file));
        command.spawn().expect("models-fetch run starts")
    }
}
