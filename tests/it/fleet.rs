//! Many hosts (issue 15): the site cache's nginx configuration, as `nix/lib.nix` renders it
//! (`siteCacheConfig`, evaluated with nix-instantiate here; packaging/nginx-site-cache.conf is
//! its default rendering, which tests/nix/cases.nix checks), run by real nginx in front of the
//! in-process Hub and CDN of `origin.rs` (302s with a presigned query that differs per
//! request); mirrors that need credentials; a cache that serves wrong bytes; an endpoint that
//! answers unlike the Hub.
//!
//! Needs nginx (as the end-to-end tests) and nix-instantiate (as tests/it/nix.rs); without them
//! these tests fail with a hint, unless `MODELS_FETCH_SKIP_E2E=1` is set.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::{Model, RUN_LIMIT, Run, Site, TOKEN, data, root, run_with_limit, sha256_hex, temp_dir};
use crate::origin::{Blob, Fault, Host, Origin, Route, Rule};

fn skip() -> bool {
    let skip = std::env::var_os("MODELS_FETCH_SKIP_E2E").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        eprintln!("MODELS_FETCH_SKIP_E2E set: fleet test skipped");
    }
    skip
}

/// A program in `$var`, on PATH, or in one of `extra`; panics with a hint when there is none.
fn program(name: &str, var: &str, extra: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::var_os(var)
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join(name)))
        .chain(extra.iter().map(|dir| Path::new(dir).join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found (${var}, PATH): run .ci/test (it installs it), or set \
                 MODELS_FETCH_SKIP_E2E=1 to skip the fleet tests"
            )
        })
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port").local_addr().unwrap().port()
}

/// `siteCacheConfig (siteCacheDefaults // overrides)` of nix/lib.nix: the text the NixOS
/// module gives `services.nginx`.
fn render_site_cache(listen: &str, upstream: &str, cache_dir: &Path, slice: &str) -> String {
    let nix = program("nix-instantiate", "NIX_INSTANTIATE", &["/usr/bin"]);
    let settings = serde_json::json!({
        "listen": [listen],
        "upstream": upstream,
        "cacheDir": cache_dir.display().to_string(),
        "sliceSize": slice,
    });
    let expression = format!(
        "let mf = import {}/nix/lib.nix; in mf.siteCacheConfig (mf.siteCacheDefaults // builtins.fromJSON ''{}'')",
        root().display(),
        settings
    );
    let output = Command::new(nix)
        .args(["--readonly-mode", "--eval", "--strict", "--json", "-E", &expression])
        .env("NIX_PATH", "")
        .output()
        .expect("nix-instantiate runs");
    assert!(output.status.success(), "rendering the site cache failed:\n{}", crate::fixture::text(&output));
    serde_json::from_slice(&output.stdout).expect("a JSON string")
}

/// One request line of nginx's access log (format `fleet`).
#[derive(Debug, Clone, PartialEq)]
struct Hit {
    server: String,
    request: String,
    status: u16,
    /// Whether the request carried an Authorization header (its value is never logged).
    auth: bool,
}

/// A real nginx (one process, foreground, unprivileged paths) running the rendered site cache
/// and the test's own extra servers; killed when dropped.
struct Nginx {
    prefix: PathBuf,
    child: Child,
}

impl Nginx {
    /// nginx in `prefix` with `http` (text of the http block) beside the test's main lines.
    fn start(prefix: &Path, http: &str, ports: &[u16]) -> Self {
        for dir in ["logs", "tmp", "cache"] {
            std::fs::create_dir_all(prefix.join(dir)).unwrap();
        }
        let p = prefix.display();
        let conf = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             client_body_temp_path {p}/tmp/body;\nproxy_temp_path {p}/tmp/proxy;\n\
             fastcgi_temp_path {p}/tmp/fastcgi;\nuwsgi_temp_path {p}/tmp/uwsgi;\nscgi_temp_path {p}/tmp/scgi;\n\
             default_type application/octet-stream;\ntypes {{ }}\n\
             map $http_authorization $fleet_auth {{ \"\" no; default yes; }}\n\
             log_format fleet '$server_port\\t$request\\t$status\\t$fleet_auth';\n\
             access_log {p}/logs/access.log fleet;\n{http}\n}}\n"
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let stderr = File::create(prefix.join("logs/stderr.txt")).unwrap();
        let mut command = Command::new(program("nginx", "NGINX_BIN", &["/usr/sbin"]));
        command
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; nginx dies with this test's thread.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports.iter().all(|port| TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).is_ok()) {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(prefix.join("logs/stderr.txt")).unwrap_or_default()
                    + &std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
                panic!("nginx exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { prefix: prefix.to_owned(), child }
    }

    /// The access log once nginx has written every line so far.
    fn hits(&self) -> Vec<Hit> {
        let read = || {
            let text = std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default();
            text.lines()
                .map(|line| {
                    let f: Vec<&str> = line.split('\t').collect();
                    assert_eq!(f.len(), 4, "unexpected log line {line:?}");
                    Hit {
                        server: f[0].to_owned(),
                        request: f[1].to_owned(),
                        status: f[2].parse().unwrap(),
                        auth: f[3] == "yes",
                    }
                })
                .collect::<Vec<_>>()
        };
        let mut last = read();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let now = read();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.prefix.join("logs/stderr.txt")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The site cache of `origin` (slices of `slice`), on its own port, in `prefix`.
fn site_cache(origin: &Origin, prefix: &Path, slice: &str) -> (Nginx, String) {
    let port = free_port();
    let text =
        render_site_cache(&format!("127.0.0.1:{port}"), origin.hub_url(), &prefix.join("cache"), slice);
    (Nginx::start(prefix, &text, &[port]), format!("http://127.0.0.1:{port}"))
}

/// An answer to one request sent by hand: status, headers (names in lower case), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// `method path` on `base` with `authorization`, over a connection of its own.
fn request(base: &str, method: &str, path: &str, authorization: Option<&str>) -> Answer {
    let address = base.strip_prefix("http://").expect("an http base");
    let mut conn = TcpStream::connect(address).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = authorization.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    write!(conn, "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read the answer");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: raw[end..].to_vec() }
}

/// The bytes the CDN sent for `sha256`, from the origin's request log: the range asked for
/// (nginx's slices) or the whole file.
fn cdn_bytes(origin: &Origin, blob: &Blob) -> u64 {
    origin
        .requests()
        .iter()
        .filter(|r| r.host != Host::Hub && r.path() == format!("/blobs/{}", blob.sha256))
        .map(|r| match r.range() {
            Some((start, end)) => end.map_or(blob.size - 1, |e| e.min(blob.size - 1)) + 1 - start,
            None => blob.size,
        })
        .sum()
}

/// `blob` is `model`'s file at its store path and its blob (no Hub commit: a mirror served it).
fn assert_stored(site: &Site, model: Model, blob: &Blob) {
    let planned = site.planned(model.id);
    for path in [&planned.store, &planned.blob] {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(sha256_hex(&bytes), blob.sha256, "{}", path.display());
    }
}

const PUBLIC: Model =
    Model::new("ajna-fleet-public", "ajna", "ajna-fleet-public.safetensors", "fleet-org/public")
        .at("model.safetensors", "main");
const PRIVATE: Model =
    Model::new("anahata-fleet-private", "anahata", "anahata-fleet-private.safetensors", "fleet-org/private")
        .at("weights/model.safetensors", "main");

/// How many hosts share the site cache.
const HOSTS: usize = 20;

#[test]
fn twenty_hosts_through_the_site_cache_the_cdn_serves_each_byte_once() {
    if skip() {
        return;
    }
    let origin = Origin::start(None);
    let public = origin.publish(PUBLIC.repo, PUBLIC.hub_path(), data(151, 1 << 20));
    let private = origin.publish(PRIVATE.repo, PRIVATE.hub_path(), data(152, 256 << 10));
    origin.make_private(PRIVATE.repo);
    let dir = temp_dir();
    // Small slices: the 1 MiB file is four of them, each filled once under its own lock.
    let (cache, endpoint) = site_cache(&origin, dir.path(), "256k");

    let hosts: Vec<Site> = (0..HOSTS)
        .map(|_| {
            let site = Site::offline();
            site.set("endpoint", endpoint.as_str());
            site.set("stall_timeout", "20s");
            site.write_index(&[(PUBLIC, &public), (PRIVATE, &private)]);
            site
        })
        .collect();
    // Every host at once.
    let barrier = std::sync::Barrier::new(HOSTS);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .iter()
            .map(|site| {
                let (barrier, command) = (&barrier, site.command(&["sync"]));
                scope.spawn(move || {
                    barrier.wait();
                    run_with_limit(command, RUN_LIMIT, &|| false)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a host's thread")).collect()
    });
    for (site, run) in hosts.iter().zip(&runs) {
        run.assert_ok();
        site.assert_no_secret_in(&run.out, "the output of sync");
        site.assert_published(PUBLIC, &public);
        site.assert_published(PRIVATE, &private);
    }

    // The CDN served each blob's bytes once (a slice per request; at most 5 % more).
    for blob in [&public, &private] {
        let sent = cdn_bytes(&origin, blob);
        assert!(
            sent >= blob.size && sent * 100 <= blob.size * 105,
            "the CDN sent {sent} bytes of a {}-byte file to {HOSTS} hosts:\n{:#?}",
            blob.size,
            origin.requests_to(Route::Cdn)
        );
    }
    let slices = |blob: &Blob| {
        origin.requests_to(Route::Cdn).iter().filter(|r| r.path().ends_with(&blob.sha256)).count()
    };
    assert_eq!((slices(&public), slices(&private)), (4, 1), "one CDN request per slice");
    // The Hub authorized every host's requests itself (nothing of its answers is cached), and
    // the token never reached the CDN.
    for model in [PUBLIC, PRIVATE] {
        let resolve = format!("/{}/resolve/main/{}", model.repo, model.hub_path());
        let count = |method: &str| {
            let requests = origin.requests();
            requests
                .iter()
                .filter(|r| r.host == Host::Hub && r.method == method && r.path() == resolve)
                .count()
        };
        assert_eq!(count("HEAD"), HOSTS, "one HEAD per host reached the Hub");
        assert_eq!(count("GET"), HOSTS, "one GET per host reached the Hub");
    }
    for request in origin.requests() {
        if request.host != Host::Hub {
            assert_eq!(request.header("authorization"), None, "the CDN got a token: {request:?}");
            assert_eq!(request.header("cookie"), None, "the CDN got a cookie: {request:?}");
        } else if request.path().contains("fleet-org/private") {
            assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        }
    }

    // The cache is warm now; a private file is still refused without its token, or with
    // another one: the Hub answers, and no byte of the cached file is served.
    let private_path = format!("/{}/resolve/main/{}", PRIVATE.repo, PRIVATE.hub_path());
    let cdn_requests = origin.requests_to(Route::Cdn).len();
    for authorization in [None, Some("Bearer hf_SomebodyElsesToken000000000000")] {
        for method in ["GET", "HEAD"] {
            let answer = request(&endpoint, method, &private_path, authorization);
            assert_eq!(answer.status, 401, "{method} {authorization:?}: {answer:?}");
            assert_eq!(answer.headers.get("x-error-code").map(String::as_str), Some("RepoNotFound"));
            assert!(!answer.headers.contains_key("x-linked-etag"), "{answer:?}");
            assert!(answer.body.len() < 1000, "{method} {authorization:?}: {} bytes", answer.body.len());
        }
    }
    // With the token: the Hub's headers, and the bytes from the cache (no CDN request).
    let bearer = format!("Bearer {TOKEN}");
    let head = request(&endpoint, "HEAD", &private_path, Some(&bearer));
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.headers["x-repo-commit"], private.commit);
    assert_eq!(head.headers["x-linked-etag"].trim_matches('"'), private.sha256);
    assert_eq!(head.headers["x-linked-size"], private.size.to_string());
    let get = request(&endpoint, "GET", &private_path, Some(&bearer));
    assert_eq!(get.status, 200);
    assert_eq!(get.headers["x-models-fetch-cache"], "HIT");
    assert_eq!(sha256_hex(&get.body), private.sha256);
    // A range across slices, from the cache.
    let public_path = format!("/{}/resolve/main/{}", PUBLIC.repo, PUBLIC.hub_path());
    let mut conn = TcpStream::connect(endpoint.strip_prefix("http://").unwrap()).unwrap();
    write!(
        conn,
        "GET {public_path} HTTP/1.1\r\nHost: cache\r\nRange: bytes=200000-600000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]);
    assert!(
        head.starts_with("HTTP/1.1 206") && head.contains("Content-Range: bytes 200000-600000/1048576"),
        "{head}"
    );
    assert_eq!(&raw[end..], &public.content[200_000..=600_000]);
    assert_eq!(origin.requests_to(Route::Cdn).len(), cdn_requests, "served from the cache");
    // nginx never wrote a presigned query to its logs.
    let logs = cache.error_log() + &std::fs::read_to_string(dir.path().join("logs/access.log")).unwrap();
    assert!(!logs.contains(crate::origin::SIGNATURE_MARKER), "a presigned query in nginx's logs:\n{logs}");
    assert!(!logs.contains(TOKEN), "the token in nginx's logs");
}

/// A static mirror behind nginx at `/bearer/` (needs `Bearer MIRROR_TOKEN`), `/basic/` (needs
/// user:pass) and `/redirect/` (needs the bearer token, then redirects to the in-process CDN).
fn private_mirror(port: u16, files: &Path, cdn: &str) -> String {
    let files = files.display();
    format!(
        "server {{\n listen 127.0.0.1:{port};\n\
         location /bearer/ {{ if ($http_authorization != \"Bearer {MIRROR_TOKEN}\") {{ return 401; }} alias {files}/; }}\n\
         location /basic/ {{ if ($http_authorization != \"Basic dXNlcjpwYXNz\") {{ return 401; }} alias {files}/; }}\n\
         location ~ ^/redirect/(?<sha>[0-9a-f]+)$ {{ if ($http_authorization != \"Bearer {MIRROR_TOKEN}\") {{ return 401; }}\n\
           return 302 {cdn}/blobs/$sha?X-Amz-Signature=mirror; }}\n}}\n"
    )
}

const MIRROR_TOKEN: &str = "mirror_TokenThatMustNeverBePrinted";

#[test]
fn a_mirror_that_needs_credentials_gets_them_and_nobody_else_does() {
    if skip() {
        return;
    }
    // The Hub does not have the model (401, the next source): only the mirror has it.
    let site = Site::new();
    let model = Model::new("soma-mirror-auth", "soma", "soma-mirror-auth.safetensors", "fleet-org/absent");
    let content = data(153, 300_000);
    // The CDN has the same bytes under another repository, for the mirror's redirect.
    let blob = site.origin().publish("fleet-org/elsewhere", "x.safetensors", content.clone());
    let blob = Blob { commit: String::new(), ..blob };
    let dir = temp_dir();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files").join(&blob.sha256), &content).unwrap();
    let port = free_port();
    let mirror = Nginx::start(
        dir.path(),
        &private_mirror(port, &dir.path().join("files"), site.origin().cdn_url()),
        &[port],
    );
    std::fs::write(site.path("mirror-token"), format!("{MIRROR_TOKEN}\n")).unwrap();
    std::fs::write(site.path("mirror-basic"), "user:pass\n").unwrap();
    let table = |path: &str, credentials: Option<(&str, &str)>| {
        let mut t = toml::Table::new();
        t.insert("url".into(), format!("http://127.0.0.1:{port}/{path}").into());
        if let Some((file, auth)) = credentials {
            t.insert("credentials_file".into(), file.into());
            t.insert("auth".into(), auth.into());
        }
        toml::Value::Table(t)
    };
    let published = |run: &Run| {
        run.assert_ok();
        assert!(!run.out.contains(MIRROR_TOKEN) && !run.out.contains("user:pass"), "{}", run.out);
        assert_stored(&site, model, &blob);
        std::fs::remove_dir_all(site.cache()).unwrap();
        std::fs::remove_dir_all(site.store()).unwrap();
    };
    site.write_index(&[(model, &blob)]);

    // Without credentials: 401, and the failure says so.
    site.set("mirrors", vec![table("bearer", None)]);
    site.write_config();
    let run = site.sync();
    run.assert_refused(model.id, &["401"]);
    // With them: the file, bearer and basic.
    site.set("mirrors", vec![table("bearer", Some(("mirror-token", "bearer")))]);
    site.write_config();
    published(&site.sync());
    site.set("mirrors", vec![table("basic", Some(("mirror-basic", "basic")))]);
    site.write_config();
    published(&site.sync());
    // A mirror that redirects elsewhere: the credential stays behind (`sync` checks that no
    // CDN request carried an Authorization).
    site.set("mirrors", vec![table("redirect", Some(("mirror-token", "bearer")))]);
    site.write_config();
    published(&site.sync());

    // The credential went to the mirror's paths only: never to the Hub or the CDN.
    for request in site.origin().requests() {
        let auth = request.header("authorization").unwrap_or_default();
        assert!(!auth.contains(MIRROR_TOKEN) && !auth.starts_with("Basic"), "{request:?}");
    }
    let hits = mirror.hits();
    assert!(hits.iter().any(|h| h.status == 401 && !h.auth), "{hits:#?}");
    assert!(hits.iter().filter(|h| h.status != 401).all(|h| h.auth), "{hits:#?}");
}

#[test]
fn a_cache_serving_wrong_bytes_is_caught_and_the_next_source_used() {
    if skip() {
        return;
    }
    let origin = Origin::start(None);
    let model = PUBLIC;
    let blob = origin.publish(model.repo, model.hub_path(), data(154, 400_000));
    // The CDN behind the cache lies: one byte flipped; the cache keeps the lie.
    origin.add(Rule::always(Route::Cdn, Fault::FlipByte(1234)));
    let dir = temp_dir();
    let (_cache, endpoint) = site_cache(&origin, dir.path(), "8m");
    for _host in 0..2 {
        let site = Site::offline();
        site.set("endpoint", endpoint.as_str());
        site.write(&format!("mirror/{}", blob.sha256), &blob.content);
        site.set("mirrors", vec!["file://mirror"]);
        site.write_index(&[(model, &blob)]);
        let run = site.sync();
        run.assert_ok();
        assert_stored(&site, model, &blob);
        // The log names the source that lied, and says what it did.
        let lied = run
            .stderr
            .lines()
            .find(|l| l.contains("checksum mismatch"))
            .unwrap_or_else(|| panic!("no checksum mismatch logged:\n{}", run.out));
        assert!(lied.contains("this source served wrong bytes (not published)"), "{lied}");
        assert!(lied.contains(&format!("source=hub {endpoint}/{}/resolve/main/", model.repo)), "{lied}");
        assert!(run.out.contains(&format!("mirror file://{}", site.path("mirror").display())), "{}", run.out);
    }
    assert_eq!(cdn_bytes(&origin, &blob), blob.size, "the second host got the lie from the cache");
}

#[test]
fn an_endpoint_that_answers_unlike_the_hub_is_noted_once() {
    if skip() {
        return;
    }
    // nginx serving files at the Hub's resolve URLs with a 200 and X-Repo-Commit, without
    // X-Linked-* (its ETag is its own): a plain mirror of the Hub's URLs.
    let commit = "1234567890abcdef1234567890abcdef12345678";
    let dir = temp_dir();
    let port = free_port();
    let models = [
        Model::new("ajna-plain-one", "ajna", "ajna-plain-one.safetensors", "plain-org/one"),
        Model::new("soma-plain-two", "soma", "soma-plain-two.safetensors", "plain-org/two"),
    ];
    let blobs: Vec<Blob> = models
        .iter()
        .zip(155..)
        .map(|(model, seed)| {
            let content = data(seed, 200_000);
            let path = dir.path().join(format!("files/{}/resolve/main/{}", model.repo, model.hub_path()));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
            Blob {
                sha256: sha256_hex(&content),
                size: content.len() as u64,
                content: Arc::new(content),
                commit: commit.to_owned(),
            }
        })
        .collect();
    let server = format!(
        "server {{ listen 127.0.0.1:{port}; root {}/files; add_header X-Repo-Commit {commit}; }}",
        dir.path().display()
    );
    let _plain = Nginx::start(dir.path(), &server, &[port]);
    let site = Site::offline();
    site.set("endpoint", format!("http://127.0.0.1:{port}"));
    site.write_index(&[(models[0], &blobs[0]), (models[1], &blobs[1])]);
    let run = site.sync();
    run.assert_ok();
    for (model, blob) in models.iter().zip(&blobs) {
        site.assert_published(*model, blob);
    }
    let notes: Vec<&str> = run.stderr.lines().filter(|l| l.contains("unlike the Hub")).collect();
    assert_eq!(notes.len(), 1, "noted once for the endpoint, not per file:\n{}", run.out);
    assert!(
        notes[0].contains(&format!("http://127.0.0.1:{port}")) && notes[0].contains("X-Linked-Etag"),
        "{}",
        notes[0]
    );
}
