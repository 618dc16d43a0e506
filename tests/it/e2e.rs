//! End to end: `models-fetch sync` against a real nginx playing the Hub (127.0.0.1) and its CDN
//! (127.0.0.2), built by `tests/e2e/origin.sh`; the real `huggingface_hub` reading the published
//! cache offline (`tests/e2e/hf_check.py`); a download killed with SIGKILL, then resumed.
//!
//! Needs nginx and the Python venv that `.ci/test` installs (found at `$NGINX_BIN` / in `PATH`, and at
//! `$HF_PYTHON` / `.ci/tools/venv/bin/python`). Without them the tests fail with a hint, unless
//! `MODELS_FETCH_SKIP_E2E=1` is set. The site (token, index, config, where files are published)
//! is the fixture's [`Site`], offline: its origin is the nginx one here.

use std::cell::Cell;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixture::{Model, Site, data, root, run_with_limit, scrub_env, walk};
use crate::origin::Blob;

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
    /// An origin in the site's `origin/`, whose private repos need the site's token.
    fn new(site: &Site) -> Self {
        let mut origin = Self {
            prefix: site.path("origin"),
            token_file: Some(site.path("token")),
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

    /// Serves `src` as `model`'s file (its repo, path and revision, and at its commit).
    /// `extra`: `--private`, `--slow`.
    fn add(&mut self, model: Model, src: &Path, extra: &[&str]) -> Blob {
        let mut args: Vec<String> = vec![
            "add".into(),
            self.prefix.to_str().unwrap().into(),
            model.repo.into(),
            model.hub_path().into(),
            src.to_str().unwrap().into(),
            "--revision".into(),
            model.revision().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = self.script(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.added.push(args);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.len(), 3, "origin.sh add printed {out:?}");
        Blob {
            content: Arc::new(std::fs::read(src).expect("the served file")),
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

/// Writes the index of `models` and a config deploying them from `endpoint` with
/// `token_file`: the models of chakra ajna through `[chakra_models]`, the others through
/// `deployed_models`.
fn deploy(site: &Site, endpoint: &str, token_file: Option<&str>, models: &[(Model, &Blob)]) {
    site.set("endpoint", endpoint);
    match token_file {
        Some(file) => site.set("token_file", file),
        None => site.unset("token_file"),
    }
    site.set("stall_timeout", "5s");
    site.set("max_retries", 1);
    site.set("retry_base_delay", "100ms");
    site.unset("retry_max_time");
    site.write_index(models);
    let ids = |ajna: bool| -> Vec<&str> {
        models.iter().filter(|(m, _)| (m.chakra == "ajna") == ajna).map(|(m, _)| m.id).collect()
    };
    site.set("deployed_models", ids(false));
    site.set("chakra_models", toml::Table::from_iter([("ajna".to_owned(), ids(true).into())]));
    site.write_config();
}

#[test]
fn sync_fetches_public_and_private_models_from_a_hub_origin() {
    if skip() {
        return;
    }
    let site = Site::offline();
    let mut origin = Origin::new(&site);
    let public = Model::new("ajna-e2e-public", "ajna", "ajna-e2e-public.safetensors", "e2e-org/public-model")
        .at("model.safetensors", "main");
    let private = Model::new(
        "anahata-e2e-private",
        "anahata",
        "anahata-e2e-private.safetensors",
        "e2e-org/private-model",
    )
    .at("weights/private.safetensors", "main");
    let public_blob = origin.add(public, &site.write("fixtures/public.safetensors", &data(1, 300_000)), &[]);
    let private_src = site.write("fixtures/private.safetensors", &data(2, 1_000_000));
    let private_blob = origin.add(private, &private_src, &["--private"]);
    origin.start();
    deploy(&site, &origin.endpoint(), Some("token"), &[(public, &public_blob), (private, &private_blob)]);

    // `sync` checks that neither the token nor a presigned query is in the output.
    let run = site.sync();
    run.assert_ok();
    site.assert_published(public, &public_blob);
    site.assert_published(private, &private_blob);
    for (path, text) in site.written_texts() {
        site.assert_no_secret_in(&text, &path.display().to_string());
    }
    assert!(!run.out.contains("e2eSig"), "a presigned CDN URL's query is in the output:\n{}", run.out);

    let (hub, cdn) = origin.logs();
    assert!(
        hub.iter()
            .any(|h| h.request.contains("/e2e-org/private-model/resolve/main/") && h.status == 302 && h.auth),
        "the private repo was resolved with the token: {hub:#?}"
    );
    assert!(cdn.iter().all(|h| !h.auth), "Authorization was sent to the CDN: {cdn:#?}");
    for (model, blob) in [(public, &public_blob), (private, &private_blob)] {
        let bytes: u64 = cdn.iter().filter(|h| h.request.contains(&blob.sha256)).map(|h| h.bytes).sum();
        assert_eq!(bytes, blob.size, "{} downloaded once: {cdn:#?}", model.hub_path());
    }
}

#[test]
fn a_private_model_without_the_right_token_fails_naming_the_model() {
    if skip() {
        return;
    }
    let site = Site::offline();
    let mut origin = Origin::new(&site);
    let private = Model::new(
        "vishuddha-e2e-private",
        "vishuddha",
        "vishuddha-e2e-private.safetensors",
        "e2e-org/private-model",
    )
    .at("model.safetensors", "main");
    let src = site.write("fixtures/private.safetensors", &data(3, 100_000));
    let blob = origin.add(private, &src, &["--private"]);
    origin.start();

    let wrong = "hf_e2eWrongToken9876543210";
    std::fs::write(site.path("wrong-token"), wrong).unwrap();
    std::fs::set_permissions(site.path("wrong-token"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    for (name, token_file) in [("no-token", None), ("wrong-token", Some("wrong-token"))] {
        deploy(&site, &origin.endpoint(), token_file, &[(private, &blob)]);
        let run = site.sync();
        assert!(matches!(run.code, Some(c) if c != 0), "{name}: exit {:?}\n{}", run.code, run.out);
        assert!(run.out.contains(private.id), "{name}: the failure names the model:\n{}", run.out);
        assert!(!run.out.contains(wrong), "{name}: the token is in the output:\n{}", run.out);
        let paths = site.paths(private, &blob);
        assert!(!paths.model_dir().exists(), "{name}: published anyway");
        assert!(!paths.blob.exists(), "{name}: a blob exists");
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
    let site = Site::offline();
    let mut origin = Origin::new(&site);
    let commit_b = "0123456789abcdef0123456789abcdef01234567";
    let models = [
        (
            Model::new("ajna-e2e-top", "ajna", "ajna-e2e-top.safetensors", "e2e-org/multi"),
            "model.safetensors",
            "main",
            200_000,
            &[][..],
        ),
        (
            Model::new("soma-e2e-nested", "soma", "soma-e2e-nested.safetensors", "e2e-org/multi"),
            "sub/dir/model.safetensors",
            "main",
            150_000,
            &[],
        ),
        (
            Model::new("jnana-e2e-pinned", "jnana", "jnana-e2e-pinned.safetensors", "e2e-org/pinned"),
            "pinned.safetensors",
            commit_b,
            120_000,
            &[],
        ),
        (
            Model::new(
                "anahata-e2e-private",
                "anahata",
                "anahata-e2e-private.safetensors",
                "e2e-org/private",
            ),
            "private.safetensors",
            "v1.0",
            80_000,
            &["--private"],
        ),
    ];
    let served: Vec<(Model, Blob)> = models
        .iter()
        .zip(4..)
        .map(|(&(model, path, revision, size, extra), seed)| {
            let model = model.at(path, revision);
            let src = site.write(&format!("fixtures/{}", model.filename), &data(seed, size));
            (model, origin.add(model, &src, extra))
        })
        .collect();
    origin.start();
    let pairs: Vec<(Model, &Blob)> = served.iter().map(|(m, b)| (*m, b)).collect();
    deploy(&site, &origin.endpoint(), Some("token"), &pairs);
    site.sync().assert_ok();
    for (model, blob) in &pairs {
        site.assert_published(*model, blob);
    }

    let spec = json!({
        "cache_dir": site.cache(),
        "files": pairs.iter().map(|(m, b)| json!({
            "repo_id": m.repo,
            "filename": m.hub_path(),
            "revision": m.revision(),
            "sha256": b.sha256,
            "size": b.size,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(site.path("hf-spec.json"), spec.to_string()).unwrap();
    let (hub_before, cdn_before) = origin.logs();
    let mut check = Command::new(python);
    check.arg(root().join("tests/e2e/hf_check.py")).arg(site.path("hf-spec.json"));
    scrub_env(&mut check);
    let output = check.output().expect("python runs");
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
    let site = Site::offline();
    let mut origin = Origin::new(&site);
    // 8 MiB through the CDN's 2 MiB/s location: about 4 s for the whole file.
    let model = Model::new("sahasrara-e2e-big", "sahasrara", "sahasrara-e2e-big.safetensors", "e2e-org/big")
        .at("big.safetensors", "main");
    let src = site.write("fixtures/big.safetensors", &data(8, 8 << 20));
    let blob = origin.add(model, &src, &["--slow"]);
    origin.start();
    deploy(&site, &origin.endpoint(), None, &[(model, &blob)]);
    let size = blob.size;
    let paths = site.paths(model, &blob);

    // Run 1: killed once about half of the file is on disk.
    let partial = paths.partial();
    let reached = Cell::new(false);
    let run1 = run_with_limit(site.command(&["sync"]), Duration::from_secs(20), &|| {
        reached.set(std::fs::metadata(&partial).map_or(0, |m| m.len()) >= size * 3 / 8);
        reached.get()
    });
    assert!(
        reached.get() && run1.code.is_none(),
        "{} did not reach {} bytes before sync ended ({:?} after {:?}); blobs: {:?}\n{}",
        partial.display(),
        size * 3 / 8,
        run1.code,
        run1.elapsed,
        walk(&paths.repo_dir()),
        run1.out
    );
    site.assert_no_secret_in(&run1.out, "the output of the killed sync");
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept < size, "the partial file survives the kill: {kept} bytes");
    assert!(!paths.store.exists());
    let (_, cdn1) = origin.logs();

    // Run 2: resumes with a Range request and publishes a verified file.
    let run = site.sync();
    run.assert_ok();
    site.assert_published(model, &blob);
    assert!(
        !(run1.out + &run.out).contains("e2eSig"),
        "a presigned CDN URL's query is in the output:\n{}",
        run.out
    );
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
    site.sync().assert_ok();
    site.assert_published(model, &blob);
    assert_eq!(origin.logs(), (hub2, cdn2), "a sync of a published model makes no request");
}
