//! What the reliability tests (`matrix`, `crash`, `diskfull`, `hostile`, `secrets`) share: a
//! [`Site`] (a temp dir with a config, an index and a token file next to a test [`Origin`]),
//! runs of `models-fetch` bounded in time, and the invariant every one of them checks:
//!
//! **no published name holds bytes whose sha256 differs from the index.** A blob is named by
//! its sha256 and must hold exactly those bytes; every snapshot, store and chakra link that
//! resolves must resolve inside the cache or the store, to a blob of a version the index named
//! for that model (the current one, or the one published before while a new one is fetched).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::origin::{Blob, Host, Origin, SIGNATURE_MARKER, hex};
use crate::util::{temp_dir, write};

/// A model of the index and where the Hub has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    pub id: &'static str,
    pub chakra: &'static str,
    pub filename: &'static str,
    pub repo: &'static str,
}

/// An index document (the minimal valid index's entry as the template) with one entry per
/// model: its id, chakra, file and repo, the blob's sha256 and size, and the version if given.
pub fn index_document(models: &[(Model, Option<&str>, &Blob)]) -> serde_json::Value {
    let template = std::fs::read_to_string(crate::util::root().join("tests/index/valid/minimal.json"))
        .expect("minimal index");
    let mut index: serde_json::Value = serde_json::from_str(&template).expect("minimal index is JSON");
    index.as_object_mut().expect("index object").remove("$schema");
    let template = index["models"][0].take();
    let entries = models.iter().map(|(model, version, blob)| {
        let mut entry = template.clone();
        entry["id"] = model.id.into();
        entry["chakra"] = model.chakra.into();
        if let Some(version) = version {
            entry["version"] = (*version).into();
        }
        entry["artifact"] = serde_json::json!({
            "filename": model.filename,
            "sha256": blob.sha256,
            "sizeBytes": blob.size,
            "format": "safetensors",
            "repo": model.repo,
        });
        entry
    });
    index["models"] = entries.collect();
    index
}

pub const AJNA: Model = Model {
    id: "ajna-insight-v2",
    chakra: "ajna",
    filename: "ajna-insight-v2.safetensors",
    repo: "rel-org/ajna-insight",
};
pub const ANAHATA: Model = Model {
    id: "anahata-heart-v1",
    chakra: "anahata",
    filename: "anahata-heart-v1.safetensors",
    repo: "rel-org/anahata-heart",
};
pub const MANIPURA: Model = Model {
    id: "manipura-will-v3",
    chakra: "manipura",
    filename: "sub/dir/manipura-will-v3.gguf",
    repo: "rel-org/manipura-will",
};

pub const TOKEN: &str = "hf_ReliabilityTestTokenThatMustNeverBePrinted";
/// A run that takes longer than this is killed and fails the test.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

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

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// Whether this process runs as root (mounts, namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Removes what the caller's environment could change about a run.
pub fn clean_env(command: &mut Command) {
    for var in [
        "MODELS_FETCH_CONFIG",
        "MODELS_FETCH_LOG",
        "RUST_LOG",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "CREDENTIALS_DIRECTORY",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        command.env_remove(var);
    }
}

/// One finished (or killed) run of `models-fetch`.
#[derive(Debug)]
pub struct Run {
    /// `None` when the process was killed by a signal.
    pub code: Option<i32>,
    pub stderr: String,
    /// stdout and stderr.
    pub out: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "models-fetch failed after {:?}:\n{}", self.elapsed, self.out);
    }

    /// Exit status in `codes`; a line of stderr names `id` and one of `reasons` (any case).
    pub fn assert_failed(&self, codes: &[i32], id: &str, reasons: &[&str]) {
        assert!(self.code.is_some(), "models-fetch was killed after {:?}:\n{}", self.elapsed, self.out);
        assert!(
            self.code.is_some_and(|c| codes.contains(&c)),
            "exit status {:?}, expected one of {codes:?}:\n{}",
            self.code,
            self.out
        );
        let named = self.stderr.lines().map(str::to_lowercase).any(|line| {
            line.contains(id) && reasons.iter().any(|reason| line.contains(&reason.to_lowercase()))
        });
        assert!(named, "no line of stderr names {id} and one of {reasons:?}:\n{}", self.out);
    }
}

/// Runs `command` to its end, killing it after `limit` or when `kill` says so.
pub fn run_with_limit(mut command: Command, limit: Duration, kill: &dyn Fn() -> bool) -> Run {
    let start = Instant::now();
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("models-fetch starts");
    let pipe = |mut reader: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = reader.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().expect("stdout")));
    let stderr = pipe(Box::new(child.stderr.take().expect("stderr")));
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > limit || kill() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    Run { code, out: format!("{stdout}{stderr}"), stderr, elapsed }
}

/// A file as it is on disk: device, inode, size, mtime seconds and nanoseconds.
type FileKey = (u64, u64, u64, i64, i64);

/// A temp dir with a token file, an index and a config, next to an [`Origin`] whose Hub needs
/// the token.
pub struct Site {
    pub origin: Origin,
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    pub store: PathBuf,
    /// Every model ever written to the index, with every sha256 it was given.
    history: RefCell<BTreeMap<&'static str, (Model, BTreeSet<String>)>>,
    models: RefCell<Vec<Model>>,
    versions: RefCell<u32>,
    /// Config settings over the defaults of [`Site::write_config`], as TOML values.
    settings: RefCell<BTreeMap<String, String>>,
    /// sha256 of files already hashed, by (device, inode, size, mtime): published files do not
    /// change in place, so the invariant is checked often at little cost.
    hashes: RefCell<BTreeMap<FileKey, String>>,
}

impl Site {
    /// A plain-http Hub that needs [`TOKEN`].
    pub fn new() -> Self {
        Self::with(Origin::start(Some(TOKEN)))
    }

    pub fn with(origin: Origin) -> Self {
        let dir = temp_dir();
        let token = write(dir.path(), "token", &format!("{TOKEN}\n"));
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod token");
        if let Some(pem) = origin.ca_pem() {
            write(dir.path(), "ca.pem", pem);
        }
        let (cache, store) = (dir.path().join("cache"), dir.path().join("store"));
        Site {
            origin,
            dir,
            cache,
            store,
            history: RefCell::default(),
            models: RefCell::default(),
            versions: RefCell::new(0),
            settings: RefCell::default(),
            hashes: RefCell::default(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// Sets a config key (a TOML value: `"\"2s\""`, `"3"`) for every config written from now on.
    pub fn set(&self, key: &str, value: &str) {
        self.settings.borrow_mut().insert(key.to_owned(), value.to_owned());
    }

    /// Publishes `content` as `model`'s LFS file on the Hub (redirected to the CDN).
    pub fn serve(&self, model: Model, content: Vec<u8>) -> Blob {
        self.origin.publish(model.repo, model.filename, content)
    }

    /// The index document of `models`, at a new version each call.
    pub fn index(&self, models: &[(Model, &Blob)]) -> serde_json::Value {
        let version = {
            let mut versions = self.versions.borrow_mut();
            *versions += 1;
            format!("2.{}.0", *versions)
        };
        let entries: Vec<_> =
            models.iter().map(|&(model, blob)| (model, Some(version.as_str()), blob)).collect();
        index_document(&entries)
    }

    /// Writes the index of `models` and a config deploying them.
    pub fn write_index(&self, models: &[(Model, &Blob)]) {
        self.write_index_json(&self.index(models));
        {
            let mut history = self.history.borrow_mut();
            for (model, blob) in models {
                history
                    .entry(model.id)
                    .or_insert_with(|| (*model, BTreeSet::new()))
                    .1
                    .insert(blob.sha256.clone());
            }
        }
        *self.models.borrow_mut() = models.iter().map(|(m, _)| *m).collect();
        self.write_config();
    }

    pub fn write_index_json(&self, index: &serde_json::Value) {
        write(self.dir.path(), "index.json", &serde_json::to_string_pretty(index).expect("index"));
    }

    /// A config deploying the models of the last index, short timeouts, and [`Site::set`]'s
    /// settings.
    pub fn write_config(&self) {
        let ids: Vec<String> = self.models.borrow().iter().map(|m| format!("{:?}", m.id)).collect();
        let mut keys: BTreeMap<String, String> = [
            ("index", "\"index.json\"".to_owned()),
            ("cache_dir", format!("{:?}", self.cache.display().to_string())),
            ("store_dir", format!("{:?}", self.store.display().to_string())),
            ("token_file", "\"token\"".to_owned()),
            ("endpoint", format!("{:?}", self.origin.hub_url())),
            ("deployed_models", format!("[{}]", ids.join(", "))),
            ("connect_timeout", "\"2s\"".to_owned()),
            ("stall_timeout", "\"1s\"".to_owned()),
            ("max_retries", "3".to_owned()),
            ("retry_base_delay", "\"10ms\"".to_owned()),
            ("retry_max_time", "\"20s\"".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if self.origin.ca_pem().is_some() {
            keys.insert("ca_file".into(), "\"ca.pem\"".into());
        }
        for (key, value) in self.settings.borrow().iter() {
            if value.is_empty() {
                keys.remove(key);
            } else {
                keys.insert(key.clone(), value.clone());
            }
        }
        let text: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        write(self.dir.path(), "config.toml", &text);
    }

    /// `models-fetch ARGS --config CONFIG` with a clean environment, `MODELS_FETCH_LOG=level`.
    pub fn command(&self, args: &[&str], level: Option<&str>) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_models-fetch"));
        command.args(args).arg("--config").arg(self.config());
        clean_env(&mut command);
        if let Some(level) = level {
            command.env("MODELS_FETCH_LOG", level);
        }
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    /// `models-fetch sync`; checks that no secret reached the output or a CDN.
    pub fn sync(&self) -> Run {
        self.sync_at(None)
    }

    /// `models-fetch sync` at log level `level`.
    pub fn sync_at(&self, level: Option<&str>) -> Run {
        let run = run_with_limit(self.command(&["sync"], level), RUN_LIMIT, &|| false);
        self.assert_no_secret_in(&run.out, "the output of sync");
        self.assert_cdn_never_got_the_token();
        run
    }

    /// Starts `models-fetch run` (stderr logging at `level`), its output in `log`.
    pub fn spawn_daemon(&self, level: &str, log: &Path) -> Child {
        let file = std::fs::File::create(log).expect("daemon log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_models-fetch"));
        command.args(["--log", "stderr", "run", "--config"]).arg(self.config());
        clean_env(&mut command);
        command.env("MODELS_FETCH_LOG", level);
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command.stdout(file.try_clone().expect("log handle")).stderr(file);
        command.spawn().expect("models-fetch run starts")
    }

    pub fn assert_no_secret_in(&self, text: &str, what: &str) {
        assert!(!text.contains(TOKEN), "the token is in {what}:\n{text}");
        for secret in [SIGNATURE_MARKER, "X-Amz-Signature", "X-Amz-Algorithm"] {
            assert!(!text.contains(secret), "a presigned query ({secret}) is in {what}:\n{text}");
        }
    }

    pub fn assert_cdn_never_got_the_token(&self) {
        for request in self.origin.requests() {
            if request.host != Host::Hub {
                assert_eq!(request.header("authorization"), None, "a CDN got the token: {request:?}");
            }
        }
    }

    pub fn repo_dir(&self, model: Model) -> PathBuf {
        self.cache.join(format!("models--{}", model.repo.replace('/', "--")))
    }

    pub fn blob_path(&self, model: Model, blob: &Blob) -> PathBuf {
        self.repo_dir(model).join("blobs").join(&blob.sha256)
    }

    /// Where the partial download of `blob` is kept.
    pub fn partial(&self, model: Model, blob: &Blob) -> PathBuf {
        self.repo_dir(model).join("blobs").join(format!("{}.models-fetch.incomplete", blob.sha256))
    }

    /// `{store_dir}/{id}/{filename}`.
    pub fn stored(&self, model: Model) -> PathBuf {
        self.store.join(model.id).join(model.filename)
    }

    /// `blob` is `model`'s published version: the blob, the snapshot link, `refs/main`, the
    /// store and chakra links all give its bytes.
    pub fn assert_published(&self, model: Model, blob: &Blob) {
        let blob_path = self.blob_path(model, blob);
        let meta =
            std::fs::symlink_metadata(&blob_path).unwrap_or_else(|e| panic!("{}: {e}", blob_path.display()));
        assert!(meta.is_file(), "{} is not a regular file: {meta:?}", blob_path.display());
        let bytes = std::fs::read(&blob_path).expect("blob");
        assert_eq!(sha256_hex(&bytes), blob.sha256, "{} has other content", blob_path.display());
        let real = canonical(&blob_path);
        let snapshot = self.repo_dir(model).join("snapshots").join(&blob.commit).join(model.filename);
        assert_eq!(canonical(&snapshot), real, "{} is not the blob", snapshot.display());
        let reference = std::fs::read_to_string(self.repo_dir(model).join("refs/main")).expect("refs/main");
        assert_eq!(reference, blob.commit, "refs/main");
        assert_eq!(canonical(&self.stored(model)), real, "the store link is not the blob");
        let chakra = self.store.join("by-chakra").join(model.chakra).join(model.id).join(model.filename);
        assert_eq!(canonical(&chakra), real, "{} is not the blob", chakra.display());
    }

    /// Nothing of `blob` at a published name.
    pub fn assert_not_published(&self, model: Model, blob: &Blob) {
        let repo = self.repo_dir(model);
        for path in [repo.join("blobs").join(&blob.sha256), repo.join("snapshots").join(&blob.commit)] {
            assert!(std::fs::symlink_metadata(&path).is_err(), "{} exists", path.display());
        }
    }

    /// Temp names anywhere in the cache or the store: partial files, chunk sidecars, and the
    /// `.{name}.{pid}.{n}.tmp` names of atomic replacements.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for top in [&self.cache, &self.store] {
            for path in walk(top) {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if name.ends_with(".incomplete")
                    || name.ends_with(".chunks")
                    || (name.starts_with('.') && name.ends_with(".tmp"))
                {
                    found.push(path);
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }

    /// The sha256 of the file at `path` (symlinks followed).
    fn hash_of(&self, path: &Path) -> std::io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
        if let Some(known) = self.hashes.borrow().get(&key) {
            return Ok(known.clone());
        }
        let sha = sha256_hex(&std::fs::read(path)?);
        self.hashes.borrow_mut().insert(key, sha.clone());
        Ok(sha)
    }

    /// The invariant (module docs); returns every violation, empty when it holds.
    pub fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        let history = self.history.borrow();
        let roots: Vec<PathBuf> =
            [&self.cache, &self.store].iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
        let inside = |path: &Path| roots.iter().any(|root| path.starts_with(root));
        // Blobs: the bytes are the name.
        let mut blob_dirs: Vec<PathBuf> = std::fs::read_dir(&self.cache)
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.path().join("blobs")).collect())
            .unwrap_or_default();
        blob_dirs.push(self.store.join(".models-fetch/blobs"));
        for dir in blob_dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                if let Ok(sha) = self.hash_of(&entry.path())
                    && sha != name
                {
                    found.push(format!("{} holds bytes of sha256 {sha}", entry.path().display()));
                }
            }
        }
        // Links: inside the cache or the store, to the blob of an indexed version of the model.
        for (id, (model, shas)) in history.iter() {
            let repo = self.repo_dir(*model);
            let mut names = vec![
                self.store.join(id).join(model.filename),
                self.store.join("by-chakra").join(model.chakra).join(id).join(model.filename),
            ];
            if let Ok(commits) = std::fs::read_dir(repo.join("snapshots")) {
                names.extend(commits.filter_map(Result::ok).map(|c| c.path().join(model.filename)));
            }
            for name in names {
                if std::fs::symlink_metadata(&name).is_err() {
                    continue;
                }
                let Ok(real) = std::fs::canonicalize(&name) else {
                    continue; // a dangling link gives no bytes
                };
                if !inside(&real) {
                    found.push(format!(
                        "{} resolves outside the cache and store: {}",
                        name.display(),
                        real.display()
                    ));
                    continue;
                }
                match self.hash_of(&real) {
                    Ok(sha) => {
                        if !shas.contains(&sha) {
                            found.push(format!(
                                "{} holds bytes of sha256 {sha}, not a version the index named for {id}",
                                name.display()
                            ));
                        }
                    }
                    Err(e) => found.push(format!("{}: {e}", name.display())),
                }
            }
        }
        found
    }

    /// Fails the test when the invariant does not hold, saying `when`.
    pub fn assert_invariant(&self, when: &str) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "{when}: a published name holds wrong bytes:\n{}",
            violations.join("\n")
        );
    }
}

/// Every path under `dir` (symlinks not followed).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{} does not resolve: {e}", path.display()))
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, signal) };
}
