//! A hand-written HTTP/1.1 test origin with fault injection, for the `sync` tests.
//!
//! One [`Origin`] runs three servers on its own tokio runtime (background worker threads), on
//! three ports of the loopback range, so three different origins:
//!
//! - the **Hub** (`127.0.0.1`, plain http or https with a throwaway CA) answers
//!   `HEAD|GET /{org}/{name}/resolve/{revision}/{path}` as huggingface.co does: for a large (LFS)
//!   file a `302` to the CDN with a presigned query, `X-Repo-Commit`, `X-Linked-Etag` (the
//!   sha256), `X-Linked-Size` and a `Content-Length` that is the redirect body's; for a file kept
//!   in git a `200` with the bytes, `X-Repo-Commit` and the git blob sha1 as `ETag`. It requires
//!   `Authorization: Bearer <token>` when started with a token; a renamed repo answers `307` with
//!   a relative `Location`; errors carry `X-Error-Code`.
//! - the **CDN** (`127.0.0.2`) serves `GET /blobs/{sha256}?...&X-Amz-Signature=...` with
//!   `Range: bytes=N-` support (`206` + `Content-Range`, `416` past the end).
//! - a **second CDN** on the Hub's own address but another port (same host, another origin),
//!   serving the same blobs: a place to redirect to, or where the Hub sends its resolves
//!   ([`Origin::resolve_to`]).
//!
//! Every request is recorded ([`Origin::requests`]) with its headers, the time it arrived and
//! the fault it got. Faults are [`Rule`]s: a [`Fault`] for the next requests of a [`Route`],
//! tried in the order the rules were added, each for a number of requests or forever. Every
//! connection carries exactly one request (`Connection: close`), so a fault never spills over.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::fixture::{hex, sha256_hex};

/// Every presigned query holds this; it must never appear in what models-fetch prints.
pub const SIGNATURE_MARKER: &str = "PRESIGNEDSECRET";

/// One of the three servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Hub,
    Cdn,
    Cdn2,
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `HEAD` on the Hub.
    HubHead,
    /// `GET` on the Hub.
    HubGet,
    /// `GET` on the CDN.
    Cdn,
    /// `GET` on the second CDN.
    Cdn2,
}

/// What goes wrong with one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with these headers and a short text body instead.
    Status(u16, Vec<(String, String)>),
    /// A presigned URL that has expired: the CDN's `403` with S3's XML body.
    Expired,
    /// Close the connection with a TCP reset before answering anything.
    Hangup,
    /// Read the request, then answer nothing for this long (or until the client hangs up).
    Silent(Duration),
    /// The normal answer, with these headers set (replacing those of the same name).
    Headers(Vec<(String, String)>),
    /// `302` to the same path and query on another server.
    RedirectTo(Host),
    /// `302` to the very URL asked for: a loop.
    RedirectToSelf,
    /// Send the headers and this many body bytes, then reset the connection.
    ResetAfter(usize),
    /// Send this many body bytes, then nothing for this long (or until the client hangs up).
    StallAfter(usize, Duration),
    /// Send the body `chunk` bytes at a time with a pause of `every` before each chunk.
    Drip { chunk: usize, every: Duration },
    /// Ignore `Range`: `200` with the whole body.
    IgnoreRange,
    /// Answer a ranged request with a `206` for a later offset than the one asked for (body and
    /// `Content-Range` agree with each other, not with the request).
    WrongContentRange,
    /// Announce the whole body in `Content-Length`, send only this many bytes, close cleanly.
    Truncate(usize),
    /// Serve the file with this many bytes appended (`Content-Length` counts them).
    Longer(usize),
    /// Serve the file without its last bytes (`Content-Length` agrees).
    Shorter(usize),
    /// Serve the file with the byte at this offset inverted.
    FlipByte(usize),
    /// Two faults on one answer, e.g. a flipped byte before a reset.
    And(Box<Fault>, Box<Fault>),
}

impl Fault {
    /// [`Fault::Status`] from string slices.
    pub fn status(code: u16, headers: &[(&str, &str)]) -> Self {
        Fault::Status(code, owned(headers))
    }

    /// [`Fault::Headers`] from string slices.
    pub fn headers(headers: &[(&str, &str)]) -> Self {
        Fault::Headers(owned(headers))
    }

    /// `self` and `other` on the same answer.
    pub fn and(self, other: Fault) -> Self {
        Fault::And(Box::new(self), Box::new(other))
    }

    /// The faults this one is made of.
    fn parts(&self) -> Vec<&Fault> {
        match self {
            Fault::And(a, b) => [a.parts(), b.parts()].concat(),
            single => vec![single],
        }
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A fault for some of the requests of a route.
#[derive(Debug, Clone)]
pub struct Rule {
    route: Route,
    fault: Fault,
    /// Requests still to fault; `None` is forever.
    left: Option<usize>,
    ranged_only: bool,
    /// Only requests whose path and query contain this count.
    target_contains: Option<String>,
}

impl Rule {
    /// The next request of `route` gets `fault`.
    pub fn once(route: Route, fault: Fault) -> Self {
        Self::times(route, 1, fault)
    }

    /// The next `n` requests of `route` get `fault`.
    pub fn times(route: Route, n: usize, fault: Fault) -> Self {
        Rule { route, fault, left: Some(n), ranged_only: false, target_contains: None }
    }

    /// Every request of `route` gets `fault`.
    pub fn always(route: Route, fault: Fault) -> Self {
        Rule { route, fault, left: None, ranged_only: false, target_contains: None }
    }

    /// Only requests with a `Range` header count.
    pub fn ranged_only(mut self) -> Self {
        self.ranged_only = true;
        self
    }

    /// Only requests whose path and query contain `text` count (a sha256, a repo name).
    pub fn for_target(mut self, text: &str) -> Self {
        self.target_contains = Some(text.to_owned());
        self
    }

    fn matches(&self, route: Route, request: &Request) -> bool {
        self.route == route
            && self.left != Some(0)
            && (!self.ranged_only || request.range().is_some())
            && self.target_contains.as_ref().is_none_or(|text| request.target.contains(text.as_str()))
    }
}

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub host: Host,
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
    /// The fault this request got, if any.
    pub fault: Option<Fault>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// `Range: bytes=N-` or `bytes=N-M`: (N, M).
    pub fn range(&self) -> Option<(u64, Option<u64>)> {
        let spec = self.header("range")?.trim().strip_prefix("bytes=")?;
        let (start, end) = spec.split_once('-')?;
        let end = if end.trim().is_empty() { None } else { Some(end.trim().parse().ok()?) };
        Some((start.trim().parse().ok()?, end))
    }

    fn route(&self) -> Option<Route> {
        match (self.host, self.method.as_str()) {
            (Host::Hub, "HEAD") => Some(Route::HubHead),
            (Host::Hub, "GET") => Some(Route::HubGet),
            (Host::Cdn, "GET") => Some(Route::Cdn),
            (Host::Cdn2, "GET") => Some(Route::Cdn2),
            _ => None,
        }
    }
}

/// A published file.
#[derive(Debug, Clone)]
pub struct Blob {
    pub content: Arc<Vec<u8>>,
    pub sha256: String,
    pub size: u64,
    /// The commit the revision points to since this file was published.
    pub commit: String,
}

struct HubFile {
    repo: String,
    revision: String,
    path: String,
    blob: Blob,
    /// Kept in git (served by the Hub itself) rather than in LFS (redirected to the CDN).
    in_git: bool,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    files: Vec<HubFile>,
    /// Every blob ever published, by sha256, for the CDNs.
    blobs: Vec<Blob>,
    renames: Vec<(String, String)>,
    rules: Vec<Rule>,
    requests: Vec<Request>,
    signatures: u64,
    commits: u64,
    /// The CDN the Hub's 302s point to (`None`: the CDN).
    resolve_to: Option<Host>,
}

struct Shared {
    state: Mutex<State>,
    hub: String,
    cdn: String,
    cdn2: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn base(&self, host: Host) -> &str {
        match host {
            Host::Hub => &self.hub,
            Host::Cdn => &self.cdn,
            Host::Cdn2 => &self.cdn2,
        }
    }
}

/// The three servers; they stop when this is dropped.
pub struct Origin {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    ca_pem: Option<String>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Origin {
    /// A plain-http Hub; with `token`, the Hub answers 401 to requests without it.
    pub fn start(token: Option<&str>) -> Self {
        Self::launch(token, false)
    }

    /// An https Hub with a certificate for `127.0.0.1` issued by a fresh CA ([`Origin::ca_pem`]);
    /// the CDNs stay plain http.
    pub fn start_tls(token: Option<&str>) -> Self {
        Self::launch(token, true)
    }

    fn launch(token: Option<&str>, tls: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-origin")
            .enable_all()
            .build()
            .expect("origin runtime");
        let bind = |ip: &'static str| {
            runtime.block_on(TcpListener::bind((ip, 0))).unwrap_or_else(|e| panic!("bind {ip}: {e}"))
        };
        let (hub, cdn, cdn2) = (bind("127.0.0.1"), bind("127.0.0.2"), bind("127.0.0.1"));
        let (acceptor, ca_pem) = if tls {
            let (acceptor, pem) = tls_acceptor();
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let url = |scheme: &str, listener: &TcpListener| {
            format!("{scheme}://{}", listener.local_addr().expect("bound address"))
        };
        let shared = Arc::new(Shared {
            hub: url(if tls { "https" } else { "http" }, &hub),
            cdn: url("http", &cdn),
            cdn2: url("http", &cdn2),
            state: Mutex::new(State { token: token.map(str::to_owned), ..State::default() }),
        });
        runtime.spawn(accept_loop(hub, Host::Hub, shared.clone(), acceptor));
        runtime.spawn(accept_loop(cdn, Host::Cdn, shared.clone(), None));
        runtime.spawn(accept_loop(cdn2, Host::Cdn2, shared.clone(), None));
        Origin { runtime: Some(runtime), shared, ca_pem }
    }

    /// The Hub's base URL (`http://127.0.0.1:PORT` or `https://...`), the `endpoint`.
    pub fn hub_url(&self) -> &str {
        &self.shared.hub
    }

    /// The CDN's base URL.
    pub fn cdn_url(&self) -> &str {
        &self.shared.cdn
    }

    /// The PEM of the CA that issued the https Hub's certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Publishes `content` as an LFS file at `path` on `main` of `repo`, as a new commit:
    /// resolving it redirects to the CDN.
    pub fn publish(&self, repo: &str, path: &str, content: Vec<u8>) -> Blob {
        self.add_file(repo, path, content, false)
    }

    /// Publishes `content` as a file kept in git: the Hub serves it itself.
    pub fn publish_in_git(&self, repo: &str, path: &str, content: Vec<u8>) -> Blob {
        self.add_file(repo, path, content, true)
    }

    fn add_file(&self, repo: &str, path: &str, content: Vec<u8>, in_git: bool) -> Blob {
        let mut state = self.shared.lock();
        state.commits += 1;
        let sha256 = sha256_hex(&content);
        let commit =
            sha256_hex(format!("{repo} commit {} {sha256}", state.commits).as_bytes())[..40].to_owned();
        let blob = Blob { size: content.len() as u64, content: Arc::new(content), sha256, commit };
        state.files.retain(|f| !(f.repo == repo && f.revision == "main" && f.path == path));
        let file = HubFile {
            repo: repo.to_owned(),
            revision: "main".to_owned(),
            path: path.to_owned(),
            blob: blob.clone(),
            in_git,
        };
        state.files.push(file);
        state.blobs.push(blob.clone());
        blob
    }

    /// `from` was renamed `to`: resolving in `from` answers a relative 307 into `to`.
    pub fn rename(&self, from: &str, to: &str) {
        self.shared.lock().renames.push((from.to_owned(), to.to_owned()));
    }

    /// From now on the Hub's 302s point to `cdn`.
    pub fn resolve_to(&self, cdn: Host) {
        self.shared.lock().resolve_to = Some(cdn);
    }

    /// Adds a fault rule after the existing ones.
    pub fn add(&self, rule: Rule) {
        self.shared.lock().rules.push(rule);
    }

    /// Removes every fault rule: the servers behave from now on.
    pub fn heal(&self) {
        self.shared.lock().rules.clear();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The requests of one route so far.
    pub fn requests_to(&self, route: Route) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.route() == Some(route)).collect()
    }
}

/// A fresh CA and a server certificate for `127.0.0.1` and `localhost` issued by it.
fn tls_acceptor() -> (TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "models-fetch test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("TLS server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (TlsAcceptor::from(Arc::new(config)), ca.pem())
}

/// A connection: plain TCP or TLS over TCP.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn accept_loop(listener: TcpListener, host: Host, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(tcp, host, &shared).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(SLOW, acceptor.accept(tcp)).await {
                        serve(stream, host, &shared).await;
                    }
                }
            }
        });
    }
}

/// How long a client may take to send its request.
const SLOW: Duration = Duration::from_secs(10);

/// The normal answer to a request, before any fault.
enum Answer {
    /// A status with headers and a small body.
    Plain { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// File bytes, honouring `Range`.
    Bytes { headers: Vec<(String, String)>, content: Arc<Vec<u8>> },
}

async fn serve<C: Conn>(mut conn: C, host: Host, shared: &Shared) {
    let Ok(Some(head)) = tokio::time::timeout(SLOW, read_head(&mut conn)).await else { return };
    let Some(mut request) = parse_head(&head, host) else {
        let bad = Answer::Plain { status: 400, headers: vec![], body: b"bad request\n".to_vec() };
        let request = Request {
            host,
            method: "GET".into(),
            target: "/".into(),
            headers: vec![],
            at: Instant::now(),
            fault: None,
        };
        let _ = send(&mut conn, &request, bad, None).await;
        return;
    };
    let answer = {
        let mut state = shared.lock();
        request.fault = request.route().and_then(|route| {
            let rule = state.rules.iter_mut().find(|rule| rule.matches(route, &request))?;
            rule.left = rule.left.map(|n| n - 1);
            Some(rule.fault.clone())
        });
        state.requests.push(request.clone());
        match host {
            Host::Hub => {
                let cdn = shared.base(state.resolve_to.unwrap_or(Host::Cdn)).to_owned();
                hub_answer(&mut state, &request, &cdn)
            }
            Host::Cdn | Host::Cdn2 => cdn_answer(&state, &request),
        }
    };
    let answer = match request.fault.clone() {
        Some(Fault::Hangup) => return reset(&conn),
        Some(Fault::Silent(pause)) => return drain(&mut conn, pause).await,
        Some(Fault::Status(status, headers)) => {
            let body = format!("{status} injected by the test origin\n").into_bytes();
            Answer::Plain { status, headers, body }
        }
        Some(Fault::Expired) => Answer::Plain {
            status: 403,
            headers: owned(&[("Content-Type", "application/xml")]),
            body: b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                    <Message>Request has expired</Message></Error>"
                .to_vec(),
        },
        Some(Fault::RedirectTo(to)) => redirect(format!("{}{}", shared.base(to), request.target)),
        Some(Fault::RedirectToSelf) => redirect(format!("{}{}", shared.base(host), request.target)),
        Some(Fault::Headers(extra)) => match answer {
            Answer::Plain { status, headers, body } => {
                Answer::Plain { status, headers: set_headers(headers, extra), body }
            }
            Answer::Bytes { headers, content } => {
                Answer::Bytes { headers: set_headers(headers, extra), content }
            }
        },
        _ => answer,
    };
    let fault = request.fault.clone();
    let _ = send(&mut conn, &request, answer, fault.as_ref()).await;
}

/// Reads up to the blank line that ends the request head.
async fn read_head<C: Conn>(conn: &mut C) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

fn parse_head(head: &[u8], host: Host) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let headers = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Request { host, method, target, headers, at: Instant::now(), fault: None })
}

fn redirect(location: String) -> Answer {
    let body = format!("Found. Redirecting to {location}").into_bytes();
    Answer::Plain { status: 302, headers: vec![("Location".into(), location)], body }
}

fn set_headers(mut headers: Vec<(String, String)>, extra: Vec<(String, String)>) -> Vec<(String, String)> {
    for (name, value) in extra {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
    headers
}

fn hub_error(status: u16, code: Option<&str>, message: &str) -> Answer {
    let mut headers = vec![("X-Error-Message".to_owned(), message.to_owned())];
    if let Some(code) = code {
        headers.push(("X-Error-Code".to_owned(), code.to_owned()));
    }
    headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    Answer::Plain { status, headers, body: format!("{{\"error\":\"{message}\"}}").into_bytes() }
}

/// `/{org}/{name}/resolve/{revision}/{path}` as the Hub answers it.
fn hub_answer(state: &mut State, request: &Request, cdn: &str) -> Answer {
    let segments: Vec<&str> = request.path().trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", revision_raw, path_raw] = segments[..] else {
        return hub_error(404, None, "Not found");
    };
    if let Some(token) = &state.token
        && request.header("authorization") != Some(&format!("Bearer {token}"))
    {
        return hub_error(401, None, "Invalid credentials in Authorization header");
    }
    let repo = format!("{org}/{name}");
    if let Some((_, to)) = state.renames.iter().find(|(from, _)| *from == repo) {
        let location = format!("/{to}/resolve/{revision_raw}/{path_raw}");
        let body = format!("Temporary Redirect. Redirecting to {location}").into_bytes();
        return Answer::Plain { status: 307, headers: vec![("Location".into(), location)], body };
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let (revision, path) = (decode(revision_raw), decode(path_raw));
    let in_repo: Vec<&HubFile> = state.files.iter().filter(|f| f.repo == repo).collect();
    let at_revision: Vec<&HubFile> =
        in_repo.iter().copied().filter(|f| f.revision == revision || f.blob.commit == revision).collect();
    let Some(file) = at_revision.iter().find(|f| f.path == path) else {
        return match (in_repo.is_empty(), at_revision.is_empty()) {
            (true, _) => hub_error(401, Some("RepoNotFound"), "Repository not found"),
            (false, true) => hub_error(404, Some("RevisionNotFound"), "Invalid rev id"),
            (false, false) => hub_error(404, Some("EntryNotFound"), "Entry not found"),
        };
    };
    let blob = &file.blob;
    if file.in_git {
        let headers = vec![
            ("X-Repo-Commit".to_owned(), blob.commit.clone()),
            ("ETag".to_owned(), format!("\"{}\"", git_blob_sha1(&blob.content))),
        ];
        return Answer::Bytes { headers, content: blob.content.clone() };
    }
    state.signatures += 1;
    let location = format!(
        "{cdn}/blobs/{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE_MARKER}{:06}",
        blob.sha256, state.signatures
    );
    let pointer = format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        blob.sha256, blob.size
    );
    let headers = vec![
        ("Location".to_owned(), location.clone()),
        ("X-Repo-Commit".to_owned(), blob.commit.clone()),
        ("X-Linked-Etag".to_owned(), format!("\"{}\"", blob.sha256)),
        ("X-Linked-Size".to_owned(), blob.size.to_string()),
        ("ETag".to_owned(), format!("\"{}\"", git_blob_sha1(pointer.as_bytes()))),
    ];
    Answer::Plain { status: 302, headers, body: format!("Found. Redirecting to {location}").into_bytes() }
}

/// `/blobs/{sha256}` with a presigned query, as the CDN answers it.
fn cdn_answer(state: &State, request: &Request) -> Answer {
    let xml = |status: u16, code: &str| Answer::Plain {
        status,
        headers: owned(&[("Content-Type", "application/xml")]),
        body: format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code></Error>")
            .into_bytes(),
    };
    let Some(sha256) = request.path().strip_prefix("/blobs/") else { return xml(404, "NoSuchKey") };
    if !request.target.contains("X-Amz-Signature=") {
        return xml(403, "AccessDenied");
    }
    match state.blobs.iter().find(|b| b.sha256 == sha256) {
        Some(blob) => Answer::Bytes {
            headers: vec![("ETag".to_owned(), format!("\"{}\"", blob.sha256))],
            content: blob.content.clone(),
        },
        None => xml(404, "NoSuchKey"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn write_head<C: Conn>(
    conn: &mut C,
    status: u16,
    headers: &[(String, String)],
    length: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {length}\r\nConnection: close\r\n\r\n"));
    conn.write_all(head.as_bytes()).await?;
    conn.flush().await
}

/// Writes `answer` to `request` with the body faults of `fault`, then closes the connection.
async fn send<C: Conn>(
    conn: &mut C,
    request: &Request,
    answer: Answer,
    fault: Option<&Fault>,
) -> std::io::Result<()> {
    let head_only = request.method == "HEAD";
    let (headers, content) = match answer {
        Answer::Plain { status, headers, body } => {
            write_head(conn, status, &headers, body.len()).await?;
            if !head_only {
                conn.write_all(&body).await?;
            }
            return conn.shutdown().await;
        }
        Answer::Bytes { headers, content } => (headers, content),
    };
    let faults = fault.map(Fault::parts).unwrap_or_default();
    let mut data = Cow::Borrowed(&content[..]);
    for fault in &faults {
        match fault {
            Fault::FlipByte(at) => {
                let at = at % data.len().max(1);
                if let Some(byte) = data.to_mut().get_mut(at) {
                    *byte ^= 0xff;
                }
            }
            Fault::Longer(extra) => data.to_mut().extend((0..*extra).map(|i| (i % 251) as u8)),
            Fault::Shorter(cut) => data.to_mut().truncate(content.len().saturating_sub(*cut)),
            _ => {}
        }
    }
    let total = data.len();
    let range = if faults.contains(&&Fault::IgnoreRange) { None } else { request.range() };
    let (status, start, end) = match range {
        None => (200, 0, total),
        Some((start, end)) if (start as usize) < total => {
            let end = end.map_or(total, |e| (e as usize + 1).min(total));
            (206, start as usize, end)
        }
        Some(_) => {
            let headers = vec![("Content-Range".to_owned(), format!("bytes */{total}"))];
            write_head(conn, 416, &headers, 0).await?;
            return conn.shutdown().await;
        }
    };
    let start = if status == 206 && faults.contains(&&Fault::WrongContentRange) {
        start + (end - start) / 2
    } else {
        start
    };
    let body = &data[start..end];
    let mut headers = headers;
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    headers.push(("Content-Type".into(), "application/octet-stream".into()));
    if status == 206 {
        headers.push(("Content-Range".into(), format!("bytes {start}-{}/{total}", end - 1)));
    }
    write_head(conn, status, &headers, body.len()).await?;
    if head_only {
        return conn.shutdown().await;
    }
    let delivery = faults.iter().find(|f| {
        matches!(f, Fault::ResetAfter(_) | Fault::Truncate(_) | Fault::StallAfter(..) | Fault::Drip { .. })
    });
    match delivery {
        Some(Fault::ResetAfter(n)) => {
            conn.write_all(&body[..(*n).min(body.len())]).await?;
            conn.flush().await?;
            // Let the client read what was sent before the reset discards it.
            tokio::time::sleep(Duration::from_millis(150)).await;
            reset(conn);
            return Ok(());
        }
        Some(Fault::Truncate(n)) => conn.write_all(&body[..(*n).min(body.len())]).await?,
        Some(Fault::StallAfter(n, pause)) => {
            conn.write_all(&body[..(*n).min(body.len())]).await?;
            conn.flush().await?;
            drain(conn, *pause).await;
        }
        Some(Fault::Drip { chunk, every }) => {
            for piece in body.chunks((*chunk).max(1)) {
                tokio::time::sleep(*every).await;
                conn.write_all(piece).await?;
                conn.flush().await?;
            }
        }
        _ => conn.write_all(body).await?,
    }
    conn.shutdown().await
}

/// Waits `pause`, or less if the client closes the connection first.
async fn drain<C: Conn>(conn: &mut C, pause: Duration) {
    let mut sink = [0u8; 1024];
    let _ =
        tokio::time::timeout(pause, async { while conn.read(&mut sink).await.is_ok_and(|n| n > 0) {} }).await;
}

/// Makes the coming close of `conn` a TCP reset (`SO_LINGER` 0) instead of a clean close.
fn reset<C: Conn>(conn: &C) {
    let _ = conn.tcp().set_zero_linger();
}

/// The git blob id of `content`: `sha1("blob <len>\0" + content)`.
fn git_blob_sha1(content: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", content.len()).as_bytes());
    hasher.update(content);
    hex(&hasher.finalize())
}
