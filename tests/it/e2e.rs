//! End to end: `models-fetch sync` against a real nginx playing the Hub (127.0.0.1) and its CDN
//! (127.0.0.2), built by `tests/e2e/origin.sh`; the real `huggingface_hub` reading the published
//! cache offline (`tests/e2e/hf_check.py`); a download killed with SIGKILL, then resumed.
//!
//! Needs nginx and the Python venv that `.ci/test` installs (found at `$NGINX_BIN` / in `PATH`, and at
//! `$HF_PYTHON` / `.ci/tools/venv/bin/python`). Without them the tests fail with a hint, unless
//! `MODELS_FETCH_SKIP_E2E=1` is set.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{root, temp_dir};

/// The Hub token of the private repo: it must never show up in output, logs or files.
const TOKEN: &str = "hf_e2eSecretTokenDoNotLeak0123456789";
const CDN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn skip() -> bool {
    let skip = std::env::var_os("MODELS_FETCH_SKIP_E2E").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        eprintln!("MODELS_FETCH_SKIP_E2E set: end-to-end test skipped");
    }
    skip
}

/// nginx, installed by `.ci/test`; the tests refuse to pass silently without it.
fn nginx() -> PathBuf {
    let path = std::env::var_os("NGINX_BIN").map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())
    });
    match path {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "nginx not found (in $NGINX_BIN, PATH or /usr/sbin): run .ci/test (it installs nginx), \
             set NGINX_BIN=/path/to/nginx, or set MODELS_FETCH_SKIP_E2E=1 to skip the end-to-end tests"
        ),
    }
}

/// The venv's python with the pinned huggingface_hub, installed by `.ci/test`.
fn hf_python() -> PathBuf {
    let path =
        std::env::var_os("HF_PYTHON").map_or_else(|| root().join(".ci/tools/venv/bin/python"), PathBuf::from);
    assert!(
        path.exists(),
        "python with huggingface_hub not found at {}: run .ci/test (it creates .ci/tools/venv), \
         set HF_PYTHON=/path/to/python, or set MODELS_FETCH_SKIP_E2E=1 to skip the end-to-end tests",
        path.display()
    );
    path
}

/// A port free on `ip` right now.
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0)).expect("bind a loopback port").local_addr().unwrap().port()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` pseudo-random bytes, the same for the same seed.
fn fixture(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// One line of an nginx access log (format `e2e` in tests/e2e/nginx.conf.in).
#[derive(Debug, Clone, PartialEq)]
struct Hit {
    request: String,
    status: u16,
    bytes: u64,
    range: String,
    auth: bool,
}

fn parse_log(path: &Path) -> Vec<Hit> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 5, "unexpected log line {line:?}");
            Hit {
                request: f[0].to_owned(),
                status: f[1].parse().unwrap(),
                bytes: f[2].parse().unwrap(),
                range: f[3].to_owned(),
                auth: match f[4] {
                    "auth=yes" => true,
                    "auth=no" => false,
                    other => panic!("unexpected auth field {other:?}"),
                },
            }
        })
        .collect()
}

/// A file the origin serves, as `origin.sh add` reported it.
#[derive(Debug, Clone)]
struct Served {
    repo: String,
    path: String,
    revision: String,
    sha256: String,
    size: u64,
    commit: String,
}

/// A running nginx origin in its own directory, stopped when dropped.
struct Origin {
    prefix: PathBuf,
    token_file: Option<PathBuf>,
    /// The arguments of every `origin.sh add` so far, replayed when a port was taken.
    added: Vec<Vec<String>>,
    hub_port: u16,
    cdn_port: u16,
    child: Option<Child>,
}

impl Origin {
    fn new(dir: &Path, token_file: Option<&Path>) -> Self {
        let mut origin = Self {
            prefix: dir.join("origin"),
            token_file: token_file.map(Path::to_owned),
            added: Vec::new(),
            hub_port: 0,
            cdn_port: 0,
            child: None,
        };
        origin.init();
        origin
    }

    fn script(&self, args: &[&str]) -> String {
        let output = Command::new("bash")
            .arg(root().join("tests/e2e/origin.sh"))
            .args(args)
            .env("NGINX_BIN", nginx())
            .output()
            .expect("bash runs tests/e2e/origin.sh");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "origin.sh {args:?}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn init(&mut self) {
        self.hub_port = free_port(Ipv4Addr::LOCALHOST);
        self.cdn_port = free_port(CDN_IP);
        let _ = std::fs::remove_dir_all(&self.prefix);
        let prefix = self.prefix.to_str().unwrap().to_owned();
        let mut args = vec!["init".to_owned(), prefix, self.hub_port.to_string(), self.cdn_port.to_string()];
        if let Some(token_file) = &self.token_file {
            args.extend(["--token-file".to_owned(), token_file.to_str().unwrap().to_owned()]);
        }
        self.script(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Serves `src` as `path` of `repo` at `revision` (and at its commit). `extra`: `--private`,
    /// `--slow`.
    fn add(&mut self, repo: &str, path: &str, revision: &str, src: &Path, extra: &[&str]) -> Served {
        let mut args: Vec<String> = vec![
            "add".into(),
            self.prefix.to_str().unwrap().into(),
            repo.into(),
            path.into(),
            src.to_str().unwrap().into(),
            "--revision".into(),
            revision.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = self.script(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.added.push(args);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.len(), 3, "origin.sh add printed {out:?}");
        Served {
            repo: repo.into(),
            path: path.into(),
            revision: revision.into(),
            sha256: f[0].into(),
            size: f[1].parse().unwrap(),
            commit: f[2].into(),
        }
    }

    /// Starts nginx in the foreground (one process, killed with the test); retries on other
    /// ports if one was taken meanwhile.
    fn start(&mut self) {
        for attempt in 0..3 {
            if attempt > 0 {
                self.init();
                for args in self.added.clone() {
                    self.script(&args.iter().map(String::as_str).collect::<Vec<_>>());
                }
            }
            let stderr = File::create(self.prefix.join("logs/stderr.txt")).unwrap();
            let mut command = Command::new("bash");
            command
                .arg(root().join("tests/e2e/origin.sh"))
                .args(["run", self.prefix.to_str().unwrap()])
                .env("NGINX_BIN", nginx())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            // SAFETY: prctl is async-signal-safe; the child dies with this test's thread.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = command.spawn().expect("nginx starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = self.read("logs/stderr.txt") + &self.read("logs/error.log");
                    if log.contains("Address already in use") && attempt < 2 {
                        break;
                    }
                    panic!("nginx exited ({status}):\n{log}");
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, self.hub_port)).is_ok()
                    && TcpStream::connect((CDN_IP, self.cdn_port)).is_ok()
                {
                    self.child = Some(child);
                    return;
                }
                assert!(Instant::now() < deadline, "nginx did not listen within 10 s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.prefix.join(rel)).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    /// Both access logs once nginx has written every line of the requests so far (it logs a
    /// request when it is finished, possibly just after the client saw the last byte).
    fn logs(&self) -> (Vec<Hit>, Vec<Hit>) {
        let read =
            || (parse_log(&self.prefix.join("logs/hub.log")), parse_log(&self.prefix.join("logs/cdn.log")));
        let mut last = read();
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(150));
            let now = read();
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("the nginx logs keep growing: {last:#?}");
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A model of the test index, served from the origin.
struct Model {
    id: &'static str,
    chakra: &'static str,
    filename: &'static str,
    served: Served,
}

fn index_entry(model: &Model) -> Value {
    json!({
        "id": model.id,
        "version": "1.0.0",
        "chakra": model.chakra,
        "frequencyHz": 432,
        "geometry": { "pattern": "hexagon", "dimensions": 2 },
        "temporalScope": "eternal",
        "semanticTags": ["e2e"],
        "dataset": { "id": "e2e-corpus", "url": "https://example.org/datasets/e2e" },
        "training": { "repo": "https://example.org/training/e2e", "command": "python train.py" },
        "artifact": {
            "filename": model.filename,
            "sha256": model.served.sha256,
            "sizeBytes": model.served.size,
            "format": "safetensors",
            "repo": model.served.repo,
            "revision": model.served.revision,
            "path": model.served.path,
        },
        "license": "MIT",
        "provenance": { "runId": "e2e-run", "creator": "models-fetch e2e tests" },
    })
}

/// The test's directory: fixtures, origin, index, config, cache and store.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let site = Self { dir: temp_dir() };
        let token_file = site.path("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn origin(&self) -> Origin {
        Origin::new(self.dir.path(), Some(&self.path("token")))
    }

    /// Writes fixture bytes to `fixtures/{name}` and returns its path.
    fn fixture(&self, name: &str, seed: u64, len: usize) -> PathBuf {
        let path = self.path(&format!("fixtures/{name}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fixture(seed, len)).unwrap();
        path
    }

    /// Writes `index.json` with `models` and `{name}.toml` deploying them; returns the config.
    /// Models of chakra ajna are deployed through `[chakra_models]`, the others directly.
    fn config(&self, name: &str, endpoint: &str, token_file: Option<&str>, models: &[&Model]) -> PathBuf {
        let index = json!({ "models": models.iter().map(|m| index_entry(m)).collect::<Vec<_>>() });
        std::fs::write(self.path("index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
        let list = |chakra: bool| {
            let ids: Vec<String> = models
                .iter()
                .filter(|m| (m.chakra == "ajna") == chakra)
                .map(|m| format!("{:?}", m.id))
                .collect();
            ids.join(", ")
        };
        let token = token_file.map(|t| format!("token_file = {t:?}\n")).unwrap_or_default();
        let (direct, ajna) = (list(false), list(true));
        let text = format!(
            r#"index = "index.json"
cache_dir = "hf-cache"
store_dir = "store"
{token}endpoint = "{endpoint}"
connect_timeout = "2s"
stall_timeout = "5s"
max_retries = 1
retry_base_delay = "100ms"
deployed_models = [{direct}]

[chakra_models]
ajna = [{ajna}]
"#
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.path(&format!("hf-cache/models--{}", repo.replace('/', "--")))
    }

    fn blob(&self, served: &Served) -> PathBuf {
        self.repo_dir(&served.repo).join("blobs").join(&served.sha256)
    }

    fn partial(&self, served: &Served) -> PathBuf {
        self.repo_dir(&served.repo).join("blobs").join(format!("{}.models-fetch.incomplete", served.sha256))
    }
}

/// `models-fetch` with a clean environment (no token or proxy from the caller).
fn command(args: &[&str], log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_models-fetch"));
    command.args(args).current_dir(root()).stdin(Stdio::null());
    for var in [
        "MODELS_FETCH_CONFIG",
        "CREDENTIALS_DIRECTORY",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(var);
    }
    command.stdout(File::create(log).unwrap()).stderr(File::create(log.with_extension("err")).unwrap());
    command
}

fn output_of(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
        + &std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
}

/// Runs `models-fetch sync --config CONFIG` to completion (60 s at most); exit code and output.
fn sync(config: &Path) -> (Option<i32>, String) {
    let log = config.with_extension(format!("run{}.out", fastrand::u32(..)));
    let mut child = command(&["sync", "--config", config.to_str().unwrap()], &log).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), output_of(&log));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("models-fetch sync did not finish within 60 s:\n{}", output_of(&log));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The published layout of `model`: verified blob, relative snapshot link, ref without newline,
/// store link; no partial file left.
fn assert_published(site: &Site, model: &Model) {
    let served = &model.served;
    let blob = site.blob(served);
    let bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    assert_eq!(bytes.len() as u64, served.size, "{}", blob.display());
    assert_eq!(sha256(&bytes), served.sha256, "{}", blob.display());

    let repo = site.repo_dir(&served.repo);
    let snapshot = repo.join("snapshots").join(&served.commit).join(&served.path);
    let target = std::fs::read_link(&snapshot).unwrap_or_else(|e| panic!("{}: {e}", snapshot.display()));
    assert!(target.is_relative(), "{} -> {} must be relative", snapshot.display(), target.display());
    assert_eq!(std::fs::canonicalize(&snapshot).unwrap(), std::fs::canonicalize(&blob).unwrap());
    if served.revision != served.commit {
        let reference = repo.join("refs").join(&served.revision);
        assert_eq!(std::fs::read_to_string(&reference).unwrap(), served.commit, "{}", reference.display());
    }

    let stored = site.path(&format!("store/{}/{}", model.id, model.filename));
    assert_eq!(sha256(&std::fs::read(&stored).unwrap()), served.sha256, "{}", stored.display());
    let by_chakra = site.path(&format!("store/by-chakra/{}/{}/{}", model.chakra, model.id, model.filename));
    assert_eq!(sha256(&std::fs::read(&by_chakra).unwrap()), served.sha256, "{}", by_chakra.display());

    let partials: Vec<PathBuf> = walk(&site.path("hf-cache"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(partials.is_empty(), "partial files left: {partials:?}");
}

/// No file under the site's cache and store, and no output, holds the token.
fn assert_no_token(site: &Site, out: &str) {
    assert!(!out.contains(TOKEN), "the token is in the output:\n{out}");
    for file in walk(&site.path("hf-cache")).into_iter().chain(walk(&site.path("store"))) {
        let meta = file.symlink_metadata().unwrap();
        if meta.is_file() && meta.len() < (1 << 20) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN), "the token is in {}", file.display());
        }
    }
}

#[test]
fn sync_fetches_public_and_private_models_from_a_hub_origin() {
    if skip() {
        return;
    }
    let site = Site::new();
    let mut origin = site.origin();
    let public_src = site.fixture("public.safetensors", 1, 300_000);
    let private_src = site.fixture("private.safetensors", 2, 1_000_000);
    let public = Model {
        id: "ajna-e2e-public",
        chakra: "ajna",
        filename: "ajna-e2e-public.safetensors",
        served: origin.add("e2e-org/public-model", "model.safetensors", "main", &public_src, &[]),
    };
    let private = Model {
        id: "anahata-e2e-private",
        chakra: "anahata",
        filename: "anahata-e2e-private.safetensors",
        served: origin.add(
            "e2e-org/private-model",
            "weights/private.safetensors",
            "main",
            &private_src,
            &["--private"],
        ),
    };
    origin.start();
    let config = site.config("config", &origin.endpoint(), Some("token"), &[&public, &private]);

    let (code, out) = sync(&config);
    assert_eq!(code, Some(0), "{out}");
    assert_published(&site, &public);
    assert_published(&site, &private);
    assert_no_token(&site, &out);
    assert!(!out.contains("e2eSig"), "a presigned CDN URL's query is in the output:\n{out}");

    let (hub, cdn) = origin.logs();
    assert!(
        hub.iter()
            .any(|h| h.request.contains("/e2e-org/private-model/resolve/main/") && h.status == 302 && h.auth),
        "the private repo was resolved with the token: {hub:#?}"
    );
    assert!(cdn.iter().all(|h| !h.auth), "Authorization was sent to the CDN: {cdn:#?}");
    for served in [&public.served, &private.served] {
        let bytes: u64 = cdn.iter().filter(|h| h.request.contains(&served.sha256)).map(|h| h.bytes).sum();
        assert_eq!(bytes, served.size, "{} downloaded once: {cdn:#?}", served.path);
    }
}

#[test]
fn a_private_model_without_the_right_token_fails_naming_the_model() {
    if skip() {
        return;
    }
    let site = Site::new();
    let mut origin = site.origin();
    let src = site.fixture("private.safetensors", 3, 100_000);
    let private = Model {
        id: "vishuddha-e2e-private",
        chakra: "vishuddha",
        filename: "vishuddha-e2e-private.safetensors",
        served: origin.add("e2e-org/private-model", "model.safetensors", "main", &src, &["--private"]),
    };
    origin.start();

    let wrong = "hf_e2eWrongToken9876543210";
    std::fs::write(site.path("wrong-token"), wrong).unwrap();
    std::fs::set_permissions(site.path("wrong-token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    for (name, token_file) in [("no-token", None), ("wrong-token", Some("wrong-token"))] {
        let config = site.config(name, &origin.endpoint(), token_file, &[&private]);
        let (code, out) = sync(&config);
        assert!(matches!(code, Some(c) if c != 0), "{name}: exit {code:?}\n{out}");
        assert!(out.contains(private.id), "{name}: the failure names the model:\n{out}");
        assert!(!out.contains(wrong), "{name}: the token is in the output:\n{out}");
        assert!(!site.path(&format!("store/{}", private.id)).exists(), "{name}: published anyway");
        assert!(!site.blob(&private.served).exists(), "{name}: a blob exists");
    }
    let (hub, cdn) = origin.logs();
    assert!(hub.iter().all(|h| h.status == 401), "{hub:#?}");
    assert!(hub.iter().any(|h| !h.auth) && hub.iter().any(|h| h.auth), "{hub:#?}");
    assert!(cdn.is_empty(), "nothing is downloaded: {cdn:#?}");
}

#[test]
fn huggingface_hub_reads_the_published_cache_offline() {
    if skip() {
        return;
    }
    let python = hf_python();
    let site = Site::new();
    let mut origin = site.origin();
    let a = site.fixture("a.safetensors", 4, 200_000);
    let b = site.fixture("b.safetensors", 5, 150_000);
    let c = site.fixture("c.safetensors", 6, 120_000);
    let d = site.fixture("d.safetensors", 7, 80_000);
    let commit_b = "0123456789abcdef0123456789abcdef01234567";
    let models = [
        Model {
            id: "ajna-e2e-top",
            chakra: "ajna",
            filename: "ajna-e2e-top.safetensors",
            served: origin.add("e2e-org/multi", "model.safetensors", "main", &a, &[]),
        },
        Model {
            id: "soma-e2e-nested",
            chakra: "soma",
            filename: "soma-e2e-nested.safetensors",
            served: origin.add("e2e-org/multi", "sub/dir/model.safetensors", "main", &b, &[]),
        },
        Model {
            id: "jnana-e2e-pinned",
            chakra: "jnana",
            filename: "jnana-e2e-pinned.safetensors",
            served: origin.add("e2e-org/pinned", "pinned.safetensors", commit_b, &c, &[]),
        },
        Model {
            id: "anahata-e2e-private",
            chakra: "anahata",
            filename: "anahata-e2e-private.safetensors",
            served: origin.add("e2e-org/private", "private.safetensors", "v1.0", &d, &["--private"]),
        },
    ];
    origin.start();
    let config = site.config("config", &origin.endpoint(), Some("token"), &models.iter().collect::<Vec<_>>());
    let (code, out) = sync(&config);
    assert_eq!(code, Some(0), "{out}");
    for model in &models {
        assert_published(&site, model);
    }

    let spec = json!({
        "cache_dir": site.path("hf-cache"),
        "files": models.iter().map(|m| json!({
            "repo_id": m.served.repo,
            "filename": m.served.path,
            "revision": m.served.revision,
            "sha256": m.served.sha256,
            "size": m.served.size,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(site.path("hf-spec.json"), spec.to_string()).unwrap();
    let (hub_before, cdn_before) = origin.logs();
    let output = Command::new(python)
        .arg(root().join("tests/e2e/hf_check.py"))
        .arg(site.path("hf-spec.json"))
        .env_remove("HF_TOKEN")
        .output()
        .expect("python runs");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "huggingface_hub rejects the cache:\n{report}");
    assert!(report.contains("all checks passed"), "{report}");
    // Offline means offline: the Python library asked the origin nothing.
    assert_eq!(origin.logs(), (hub_before, cdn_before));
}

#[test]
fn a_download_killed_with_sigkill_resumes_and_a_finished_sync_makes_no_request() {
    if skip() {
        return;
    }
    let site = Site::new();
    let mut origin = site.origin();
    // 8 MiB through the CDN's 2 MiB/s location: about 4 s for the whole file.
    let src = site.fixture("big.safetensors", 8, 8 << 20);
    let model = Model {
        id: "sahasrara-e2e-big",
        chakra: "sahasrara",
        filename: "sahasrara-e2e-big.safetensors",
        served: origin.add("e2e-org/big", "big.safetensors", "main", &src, &["--slow"]),
    };
    origin.start();
    let config = site.config("config", &origin.endpoint(), None, &[&model]);
    let size = model.served.size;

    // Run 1: killed once about half of the file is on disk.
    let log = site.path("run1.out");
    let mut child = command(&["sync", "--config", config.to_str().unwrap()], &log).spawn().unwrap();
    let partial = site.partial(&model.served);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if len >= size * 3 / 8 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "sync ended ({status}) before it could be killed; partial {len} bytes:\n{}",
                output_of(&log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not reach {} bytes within 20 s (has {len}); blobs: {:?}\n{}",
            partial.display(),
            size * 3 / 8,
            walk(&site.repo_dir(&model.served.repo)),
            output_of(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept < size, "the partial file survives the kill: {kept} bytes");
    assert!(!site.path(&format!("store/{}", model.id)).join(model.filename).exists());
    let (_, cdn1) = origin.logs();

    // Run 2: resumes with a Range request and publishes a verified file.
    let (code, out) = sync(&config);
    assert_eq!(code, Some(0), "{out}");
    assert_published(&site, &model);
    let out1 = output_of(&log);
    assert!(!(out1 + &out).contains("e2eSig"), "a presigned CDN URL's query is in the output:\n{out}");
    let (hub2, cdn2) = origin.logs();
    let new: Vec<&Hit> = cdn2[cdn1.len()..].iter().collect();
    let transferred: u64 = new.iter().map(|h| h.bytes).sum();
    assert!(transferred < size, "run 2 transferred {transferred} of {size} bytes: {new:#?}");
    assert!(
        new.iter().any(|h| h.status == 206 && h.range.starts_with("bytes=") && h.range != "bytes=0-"),
        "run 2 resumed with a Range request: {new:#?}"
    );
    let first: u64 = cdn1.iter().map(|h| h.bytes).sum();
    assert!(first + transferred >= size, "run 1 sent {first}, run 2 {transferred}");

    // Run 3: everything is published and intact, so no request at all.
    let (code, out) = sync(&config);
    assert_eq!(code, Some(0), "{out}");
    assert_published(&site, &model);
    assert_eq!(origin.logs(), (hub2, cdn2), "a sync of a published model makes no request");
}
