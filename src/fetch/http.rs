//! HTTP: one client for every request, redirects followed by hand so that the token goes only
//! to the endpoint's own origin and an https -> http downgrade is refused, the Hub's resolve
//! answer read, and every failure classified as transient or permanent.

use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::error::{Answer, Cause, FetchError, Redirect, describe};
use super::pace::Pace;
use super::retry::{parse_rate_limit, parse_retry_after};
use crate::config::{Config, MirrorAuth, MirrorCredentials};
use crate::secret::{Token, TokenError, redact};

/// Redirects followed for one request before giving up.
const MAX_REDIRECTS: usize = 8;

/// The Hub's answer to `HEAD .../resolve/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `X-Repo-Commit`: the commit the revision points at.
    pub commit: String,
    /// `X-Linked-Etag` or `ETag`, unquoted: the sha256 for LFS files, a git blob sha1 otherwise.
    pub etag: Option<String>,
    /// `X-Linked-Size`, or `Content-Length` of a non-redirect answer.
    pub size: Option<u64>,
    /// Where the bytes are: the CDN URL of a redirect, or the resolve URL itself.
    pub location: String,
}

/// The shared HTTP client and the token.
pub struct Http {
    client: reqwest::Client,
    token: Result<Option<Token>, TokenError>,
    endpoint: Url,
    pub stall_timeout: Duration,
    /// The minimum-rate guard of every body (`min_rate` bytes/s over `min_rate_window`).
    min_rate: (u64, Duration),
    /// The `proxy` of the config, as it may be shown (no credentials).
    proxy: Option<String>,
    /// Connections for one large file.
    pub connections_per_file: usize,
    /// Chunk size of a parallel download; files under two chunks stream over one connection.
    pub chunk_size: u64,
    max_per_host: usize,
    /// Downloads in flight at once (`max_parallel_models`); resolving does not wait for it,
    /// so the Hub's answers for the next files are ready when a download slot frees.
    downloads: std::sync::Arc<tokio::sync::Semaphore>,
    hosts: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
    /// The mirrors' credentials, each for its own base only.
    mirror_auth: Vec<MirrorAuthorization>,
    /// Endpoints already noted as answering unlike the Hub (the note is logged once each).
    unlike_hub: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A mirror's `Authorization`, for requests to its origin below its base path only; or why
/// its credentials file cannot be used (the mirror is then asked without it).
struct MirrorAuthorization {
    base: Url,
    value: Result<HeaderValue, String>,
}

impl MirrorAuthorization {
    /// Reads the credentials file (a regular file of at most 4 KiB; its content is never
    /// shown, only its path).
    fn read(credentials: &MirrorCredentials) -> Option<Self> {
        let base = Url::parse(&credentials.base).ok()?;
        let path = credentials.file.display();
        let value = crate::fsx::read_bounded_string(&credentials.file, crate::fsx::MIRROR_CREDENTIALS)
            .map_err(|e| e.to_string())
            .and_then(|text| mirror_header(text.trim(), credentials.auth))
            .map_err(|reason| format!("credentials file {path} {reason}"));
        if let Err(reason) = &value {
            tracing::warn!(mirror = %redact(base.as_str()), "{reason}; the mirror is asked without credentials");
        }
        Some(Self { base, value })
    }

    /// Whether `url` is this mirror's: its origin, and its base path or below.
    fn covers(&self, url: &Url) -> bool {
        let base = self.base.path().trim_end_matches('/');
        url.origin() == self.base.origin()
            && (url.path() == base || url.path().strip_prefix(base).is_some_and(|rest| rest.starts_with('/')))
    }
}

/// The `Authorization` value of a mirror credential, marked sensitive.
fn mirror_header(credential: &str, auth: MirrorAuth) -> Result<HeaderValue, String> {
    if credential.is_empty() {
        return Err("is empty".to_owned());
    }
    if credential.chars().any(|c| c.is_control() || c == ' ') {
        return Err("holds more than one word; it must hold the credential alone".to_owned());
    }
    let text = match auth {
        MirrorAuth::Bearer => format!("Bearer {credential}"),
        MirrorAuth::Basic if !credential.contains(':') => {
            return Err("must hold user:password (auth = \"basic\")".to_owned());
        }
        MirrorAuth::Basic => format!("Basic {}", base64(credential.as_bytes())),
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| "is not a valid header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Standard base64 with padding (RFC 4648), for `Basic` credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Http {
    /// Builds the client from the config. The token file is read here; a bad token file is kept
    /// as an error that is reported only when a request needs the token (public models still
    /// work).
    pub fn new(config: &Config, token: Result<Option<Token>, TokenError>) -> Result<Self, String> {
        let client = client(&Net::of(config))?;
        let endpoint = Url::parse(&config.endpoint).map_err(|e| format!("endpoint: {e}"))?;
        Ok(Self {
            client,
            token,
            endpoint,
            stall_timeout: config.stall_timeout,
            min_rate: (config.min_rate.as_u64(), config.min_rate_window),
            proxy: config.proxy.as_deref().map(shown_proxy),
            connections_per_file: config.connections_per_file,
            chunk_size: config.chunk_size.as_u64(),
            max_per_host: config.max_connections_per_host,
            downloads: std::sync::Arc::new(tokio::sync::Semaphore::new(config.max_parallel_models)),
            hosts: std::sync::Mutex::default(),
            mirror_auth: config.mirror_credentials.iter().filter_map(MirrorAuthorization::read).collect(),
            unlike_hub: std::sync::Mutex::default(),
        })
    }

    /// A download slot: at most `max_parallel_models` files are downloaded at once.
    pub async fn download_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.downloads.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// A place among the requests in flight to `url`'s host (at most `max_connections_per_host`).
    pub async fn host_permit(&self, url: &str) -> tokio::sync::OwnedSemaphorePermit {
        let host = Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        let semaphore = self
            .hosts
            .lock()
            .expect("hosts lock")
            .entry(host)
            .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_per_host)))
            .clone();
        semaphore.acquire_owned().await.expect("the semaphore is never closed")
    }

    /// The `Authorization` value for `url`: a mirror's credential below that mirror's base,
    /// else the token, only on the endpoint's own origin (scheme, host and port), which also
    /// keeps it off plain http unless the endpoint itself is http. Redirects are asked anew.
    fn auth_for(&self, url: &Url) -> Option<HeaderValue> {
        if let Some(mirror) = self.mirror_auth.iter().find(|m| m.covers(url)) {
            return mirror.value.as_ref().ok().cloned();
        }
        let token = self.token.as_ref().ok()?.as_ref()?;
        (url.origin() == self.endpoint.origin()).then(|| token.header_value())
    }

    /// A hint appended to a mirror's 401/403: whether its credentials were sent.
    fn mirror_hint(&self, url: &Url) -> String {
        match self.mirror_auth.iter().find(|m| m.covers(url)).map(|m| &m.value) {
            Some(Ok(_)) => "; check the mirror's credentials file".to_owned(),
            Some(Err(reason)) => format!("; no credentials were sent because the {reason}"),
            None => String::new(),
        }
    }

    /// Logs, once per endpoint, that `url`'s answer to a resolve lacks what the Hub sends
    /// (a cache or mirror in front of it may drop `X-Linked-*` or answer 200 where the Hub
    /// redirects): nothing is checked before the download then, the bytes are still checked.
    fn note_unlike_hub(&self, url: &Url, how: &str) {
        let endpoint = url.origin().ascii_serialization();
        if self.unlike_hub.lock().expect("unlike_hub lock").insert(endpoint.clone()) {
            tracing::warn!(
                endpoint = %endpoint,
                "{endpoint} answers resolves {how}, unlike the Hub: its files' sha256 and size are \
                 checked after each download only (noted once)"
            );
        }
    }

    /// A hint appended to 401/403 errors: what is wrong with the token, if anything.
    fn token_hint(&self) -> String {
        match &self.token {
            Ok(Some(_)) => "; check that the token in token_file may read this repository".to_owned(),
            Ok(None) => "; the repository may be private or gated: set token_file".to_owned(),
            Err(e) => format!("; no token was sent because {e}"),
        }
    }

    /// Sends one request and follows redirects by hand. `stop_at_other_origin` returns the
    /// redirect answer itself when it points at another origin (the Hub's 302 to its CDN).
    async fn send(
        &self,
        method: Method,
        start: &str,
        range: Option<&str>,
        stop_at_other_origin: bool,
    ) -> Result<(Url, Response), FetchError> {
        let mut url = Url::parse(start).map_err(|source| Cause::BadUrl { url: redact(start), source })?;
        for _ in 0..=MAX_REDIRECTS {
            let mut request =
                self.client.request(method.clone(), url.clone()).header(header::ACCEPT_ENCODING, "identity");
            if let Some(auth) = self.auth_for(&url) {
                request = request.header(header::AUTHORIZATION, auth);
            }
            if let Some(range) = range {
                request = request.header(header::RANGE, range);
            }
            let response = tokio::time::timeout(self.stall_timeout, request.send())
                .await
                .map_err(|_| Cause::NoAnswer { url: redact(url.as_str()), after: self.stall_timeout })?
                .map_err(|e| transport_error(&url, e, self.proxy_of(&url).as_deref()))?;
            if !response.status().is_redirection() {
                return Ok((url, response));
            }
            let Some(location) = response.headers().get(header::LOCATION) else {
                return Err(status_error(&url, &response, ""));
            };
            let refused = |refused| Cause::Redirect { url: redact(url.as_str()), refused };
            let next = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| refused(Redirect::Unreadable))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(refused(Redirect::Scheme(next.scheme().to_owned())).into());
            }
            if url.scheme() == "https" && next.scheme() != "https" {
                let (scheme, next) = (next.scheme().to_owned(), redact(next.as_str()));
                return Err(refused(Redirect::Downgrade { scheme, next }).into());
            }
            if stop_at_other_origin && next.origin() != url.origin() {
                return Ok((url, response));
            }
            url = next;
        }
        Err(Cause::Redirect { url: redact(start), refused: Redirect::TooMany(MAX_REDIRECTS) }.into())
    }

    /// `HEAD` of a Hub resolve URL: commit, etag, size and where the bytes are.
    pub async fn resolve(&self, resolve_url: &str) -> Result<Resolved, FetchError> {
        let (url, response) = {
            let _permit = self.host_permit(resolve_url).await;
            self.send(Method::HEAD, resolve_url, None, true).await?
        };
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            let hint = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                self.token_hint()
            } else {
                String::new()
            };
            return Err(status_error(&url, &response, &hint));
        }
        let headers = response.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let Some(commit) = text("x-repo-commit") else {
            return Err(Cause::NotAHub { url: redact(url.as_str()) }.into());
        };
        // The commit becomes a folder name in the cache: only a 40-hex commit id is accepted.
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            let commit = commit.chars().take(80).collect();
            return Err(Cause::BadCommit { url: redact(url.as_str()), commit }.into());
        }
        let commit = commit.to_ascii_lowercase();
        let etag = text("x-linked-etag").or_else(|| text("etag")).map(normalize_etag);
        let size = text("x-linked-size")
            .or_else(|| if status.is_redirection() { None } else { text("content-length") })
            .and_then(|s| s.parse().ok());
        let linked = text("x-linked-etag").is_some();
        let hub_etag = |e: &str| matches!(e.len(), 40 | 64) && e.bytes().all(|b| b.is_ascii_hexdigit());
        let unlike = if status.is_redirection() && !linked {
            Some("with a redirect but no X-Linked-Etag")
        } else if !linked && !etag.as_deref().is_some_and(hub_etag) {
            Some("without X-Linked-Etag and with no sha256 or git blob id as ETag")
        } else if size.is_none() {
            Some("without X-Linked-Size or Content-Length")
        } else {
            None
        };
        if let Some(how) = unlike {
            self.note_unlike_hub(&url, how);
        }
        let location = if status.is_redirection() {
            text("location").and_then(|l| url.join(l).ok()).map_or_else(|| url.to_string(), |u| u.to_string())
        } else {
            url.to_string()
        };
        Ok(Resolved { commit, etag, size, location })
    }

    /// `GET` of the bytes from `range_from` on. Returns the response when it is 200 or 206; the
    /// caller checks which one and the `Content-Range`.
    pub async fn get(&self, url: &str, range_from: u64) -> Result<Response, FetchError> {
        let range = (range_from > 0).then(|| format!("bytes={range_from}-"));
        self.get_with(url, range.as_deref()).await
    }

    /// `GET` of the bytes `start..=end` (one chunk of a parallel download). The caller checks
    /// for 206 and the exact `Content-Range`.
    pub async fn get_range(&self, url: &str, start: u64, end: u64) -> Result<Response, FetchError> {
        self.get_with(url, Some(&format!("bytes={start}-{end}"))).await
    }

    async fn get_with(&self, url: &str, range: Option<&str>) -> Result<Response, FetchError> {
        let (final_url, response) = self.send(Method::GET, url, range, false).await?;
        let status = response.status();
        if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
            return Ok(response);
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && range.is_some() {
            return Err(Cause::RangeNotSatisfiable { url: redact(final_url.as_str()) }.into());
        }
        let other_origin = final_url.origin() != self.endpoint.origin();
        if status == StatusCode::FORBIDDEN && other_origin && final_url.query().is_some() {
            return Err(Cause::Expired { answer: answer(&final_url, &response), again: false }.into());
        }
        let hint = match (matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), other_origin) {
            (true, false) => self.token_hint(),
            (true, true) => self.mirror_hint(&final_url),
            (false, _) => String::new(),
        };
        Err(status_error(&final_url, &response, &hint))
    }

    /// Reads the next piece of a body; no byte for `stall_timeout` is a transient error. When no
    /// byte comes for `IDLE`, `on_idle` runs first (the caller hands on what it holds, so a
    /// stalled or slow transfer has its bytes on disk for a resume).
    /// The proxy a request to `url` goes through, as far as the settings say: the config's
    /// `proxy`, else the environment's for the scheme; none when `NO_PROXY` names the host.
    fn proxy_of(&self, url: &Url) -> Option<String> {
        let host = url.host_str().unwrap_or_default();
        let exempt = ["NO_PROXY", "no_proxy"].iter().filter_map(|n| std::env::var(n).ok()).any(|list| {
            list.split(',').map(str::trim).any(|rule| {
                rule == "*"
                    || (!rule.is_empty()
                        && (host == rule.trim_start_matches('.')
                            || host.ends_with(&format!(".{}", rule.trim_start_matches('.')))))
            })
        });
        if exempt {
            return None;
        }
        self.proxy.clone().or_else(|| env_proxy(url.scheme()).map(|p| shown_proxy(&p)))
    }

    /// The minimum-rate guard for one body, started now.
    pub fn pace(&self) -> Pace {
        Pace::new(self.min_rate.0, self.min_rate.1, std::time::Instant::now())
    }

    /// Like [`Http::next_chunk`]; a body slower than `min_rate` over a whole window is a
    /// transient error too (`pace` measures this body).
    pub async fn next_chunk_paced(
        &self,
        response: &mut Response,
        url: &str,
        pace: &mut Pace,
        on_idle: impl FnOnce(),
    ) -> Result<Option<bytes::Bytes>, FetchError> {
        let chunk = self.next_chunk(response, url, on_idle).await?;
        // The end of the body is never too slow: what came is the whole answer.
        if let Some(piece) = &chunk {
            pace.record(piece.len() as u64, std::time::Instant::now())
                .map_err(|slow| Cause::TooSlow { url: redact(url), slow })?;
        }
        Ok(chunk)
    }

    pub async fn next_chunk(
        &self,
        response: &mut Response,
        url: &str,
        on_idle: impl FnOnce(),
    ) -> Result<Option<bytes::Bytes>, FetchError> {
        let chunk = response.chunk();
        tokio::pin!(chunk);
        let first = IDLE.min(self.stall_timeout);
        let read = match tokio::time::timeout(first, &mut chunk).await {
            Ok(read) => Ok(read),
            Err(_) => {
                on_idle();
                tokio::time::timeout(self.stall_timeout - first, &mut chunk).await
            }
        };
        match read {
            Err(_) => Err(Cause::Stalled { url: redact(url), after: self.stall_timeout }.into()),
            Ok(Err(e)) => Err(Cause::Broke { url: redact(url), source: e.without_url() }.into()),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }
}

/// How long a body may be silent before what was received is handed on.
const IDLE: Duration = Duration::from_millis(200);

/// What an HTTP client is built from: the config's network settings.
#[derive(Debug, Clone, Copy)]
pub struct Net<'a> {
    pub ca_file: Option<&'a std::path::Path>,
    pub proxy: Option<&'a str>,
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
}

impl<'a> Net<'a> {
    pub fn of(config: &'a Config) -> Self {
        Self {
            ca_file: config.ca_file.as_deref(),
            proxy: config.proxy.as_deref(),
            connect_timeout: config.connect_timeout,
            stall_timeout: config.stall_timeout,
        }
    }
}

/// The client of every request models-fetch makes (downloads, `lock`'s Hub API calls):
/// redirects followed by hand, the system roots plus `ca_file`, the proxy. Without usable
/// system roots (a minimal system without ca-certificates) only `ca_file` is trusted, so http
/// and file:// origins still work and https ones fail with a clear error.
pub fn client(net: &Net<'_>) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; ring is the one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let extra = match net.ca_file {
        Some(ca_file) => {
            let pem = crate::fsx::read_bounded(ca_file, crate::fsx::CA_FILE)
                .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
            reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: not PEM certificates: {e}", ca_file.display()))?
        }
        None => Vec::new(),
    };
    match builder(net, extra.clone(), false)?.build() {
        Ok(client) => Ok(client),
        Err(e) => {
            tracing::warn!(
                "no system CA certificates can be loaded ({}); only ca_file is trusted for https",
                describe(&e)
            );
            builder(net, extra, true)?.build().map_err(|e| format!("cannot set up HTTP: {}", describe(&e)))
        }
    }
}

/// The client's settings; `only_extra` trusts only `extra` (no system roots).
fn builder(
    net: &Net<'_>,
    extra: Vec<reqwest::Certificate>,
    only_extra: bool,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(net.connect_timeout)
        .read_timeout(net.stall_timeout)
        .user_agent(concat!("models-fetch/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(8);
    if let Some(proxy) = net.proxy {
        let proxy = reqwest::Proxy::all(proxy)
            .map_err(|e| format!("proxy: {}", describe(&e)))?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    Ok(if only_extra { builder.tls_certs_only(extra) } else { builder.tls_certs_merge(extra) })
}

/// `W/"abc"` -> `abc`.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_owned()
}

/// A request that got no HTTP answer: always transient (connect, reset, TLS hiccup, timeout)
/// except for a certificate the system does not trust, which no retry fixes. The URL is taken
/// out of the error: its text would show a presigned query string.
fn transport_error(url: &Url, error: reqwest::Error, proxy: Option<&str>) -> FetchError {
    let (url, source) = (redact(url.as_str()), error.without_url());
    if certificate_error(&source).is_some() {
        return Cause::Certificate { url, source }.into();
    }
    match proxy {
        // A connection that never got through is the proxy's failure, not the origin's.
        Some(proxy) if source.is_connect() => Cause::Proxy { url, proxy: proxy.to_owned(), source }.into(),
        _ => Cause::Transport { url, source }.into(),
    }
}

/// A proxy URL as it may be shown: without user and password.
fn shown_proxy(proxy: &str) -> String {
    match Url::parse(proxy) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "(unparsable)".to_owned(),
    }
}

/// The proxy variables reqwest reads, by scheme (`system-proxy`): the first one set.
fn env_proxy(scheme: &str) -> Option<String> {
    let names: &[&str] = if scheme == "https" {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The TLS library's own certificate error somewhere in `error`'s chain. An `io::Error` shows
/// the error it wraps but its `source` skips it (to that one's source), so the walk goes into
/// the wrapped error instead: the connector's `io::Error` wraps tokio-rustls's `io::Error`,
/// which wraps the `rustls::Error`.
pub fn certificate_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let is_certificate = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
                | rustls::Error::InvalidCertRevocationList(_)
        )
    };
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<rustls::Error>().filter(|e| is_certificate(e)) {
            return Some(found);
        }
        next = match error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

/// What a non-success answer says.
fn answer(url: &Url, response: &Response) -> Answer {
    let headers = response.headers();
    Answer {
        url: redact(url.as_str()),
        status: response.status(),
        code: header_text(headers, "x-error-code").map(str::to_owned),
        message: header_text(headers, "x-error-message").map(str::to_owned),
    }
}

/// An HTTP status that is not a success; a transient one keeps the server's wait.
fn status_error(url: &Url, response: &Response, hint: &str) -> FetchError {
    let answer = answer(url, response);
    let headers = response.headers();
    let retry_after = header_text(headers, "retry-after")
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
        .or_else(|| header_text(headers, "ratelimit").and_then(parse_rate_limit));
    Cause::Http { answer, hint: hint.to_owned(), retry_after }.into()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Checks a 206 answer's `Content-Range: bytes N-(size-1)/size`.
pub fn content_range_matches(value: Option<&HeaderValue>, from: u64, size: u64) -> bool {
    content_range_is(value, from, size.saturating_sub(1), size)
}

/// Checks a 206 answer's `Content-Range: bytes start-end/size` exactly.
pub fn content_range_is(value: Option<&HeaderValue>, start: u64, end: u64, size: u64) -> bool {
    if size == 0 {
        return false;
    }
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(rest) = value.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((range, total)) = rest.split_once('/') else {
        return false;
    };
    let Some((first, last)) = range.split_once('-') else {
        return false;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    parse(first) == Some(start)
        && parse(last) == Some(end)
        && (total.trim() == "*" || parse(total) == Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_unquoted() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (text, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(text.as_bytes()), encoded, "{text}");
        }
    }

    #[test]
    fn a_mirror_credential_goes_to_its_origin_below_its_base_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bearer"), "mirror-secret\n").unwrap();
        std::fs::write(dir.path().join("basic"), "user:pass").unwrap();
        let text = r#"
            index = "i.json"
            endpoint = "https://hub.example"
            mirrors = [
                { url = "https://m.example/models/", credentials_file = "bearer" },
                { url = "http://10.0.0.9:8080", credentials_file = "basic", auth = "basic" },
                { url = "https://hub.example/mirror", credentials_file = "missing" },
            ]
        "#;
        let config = Config::parse(&dir.path().join("config.toml"), text).unwrap();
        let http = Http::new(&config, Ok(None)).unwrap();
        let auth =
            |url: &str| http.auth_for(&Url::parse(url).unwrap()).map(|v| v.to_str().unwrap().to_owned());
        let bearer = Some("Bearer mirror-secret".to_owned());
        assert_eq!(auth("https://m.example/models/abc"), bearer);
        assert_eq!(auth("https://m.example/models"), bearer);
        assert_eq!(auth("https://m.example/models/../other/abc"), None, "normalised out of the base");
        for other in [
            "https://m.example/modelsX/abc",
            "https://m.example/other/abc",
            "http://m.example/models/abc",
            "https://m.example:8443/models/abc",
            "https://cdn.example/models/abc",
        ] {
            assert_eq!(auth(other), None, "{other}");
        }
        assert_eq!(auth("http://10.0.0.9:8080/abc"), Some("Basic dXNlcjpwYXNz".to_owned()));
        assert_eq!(auth("http://10.0.0.9/abc"), None);
        assert!(http.auth_for(&Url::parse("https://m.example/models/abc").unwrap()).unwrap().is_sensitive());
        // An unreadable credentials file: the mirror is asked without it, and its 401 says why.
        assert_eq!(auth("https://hub.example/mirror/abc"), None);
        let hint = http.mirror_hint(&Url::parse("https://hub.example/mirror/abc").unwrap());
        assert!(
            hint.contains("no credentials were sent because the credentials file")
                && hint.contains("missing")
        );
    }

    #[test]
    fn a_bad_mirror_credential_is_named_never_shown() {
        assert!(mirror_header("", MirrorAuth::Bearer).unwrap_err().contains("empty"));
        assert!(mirror_header("a b", MirrorAuth::Bearer).unwrap_err().contains("more than one word"));
        let no_colon = mirror_header("s3cr3t", MirrorAuth::Basic).unwrap_err();
        assert!(no_colon.contains("user:password") && !no_colon.contains("s3cr3t"), "{no_colon}");
    }

    #[test]
    fn content_range_must_match_exactly() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(content_range_matches(Some(&v("bytes 100-999/1000")), 100, 1000));
        assert!(content_range_matches(Some(&v("bytes 100-999/*")), 100, 1000));
        assert!(!content_range_matches(Some(&v("bytes 0-999/1000")), 100, 1000));
        assert!(!content_range_matches(Some(&v("bytes 100-998/1000")), 100, 1000));
        assert!(!content_range_matches(Some(&v("bytes 100-999/2000")), 100, 1000));
        assert!(!content_range_matches(Some(&v("items 100-999/1000")), 100, 1000));
        assert!(!content_range_matches(None, 100, 1000));
    }

    /// An error that wraps another and says nothing about certificates itself.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the handshake went wrong")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn certificate_errors_are_found_by_type_not_by_text() {
        use std::io::{Error, ErrorKind};
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let chain = Wrapper(Error::new(ErrorKind::InvalidData, unknown.clone()));
        assert_eq!(certificate_error(&chain), Some(&unknown));
        // As the connector reports it: an io::Error around tokio-rustls's io::Error.
        let nested = Error::other(Error::new(ErrorKind::InvalidData, unknown.clone()));
        assert_eq!(certificate_error(&Wrapper(nested)), Some(&unknown));
        // Text that names a certificate is not a certificate error.
        let lookalike = Wrapper(Error::other("invalid peer certificate: UnknownIssuer"));
        assert_eq!(certificate_error(&lookalike), None);
        // Nor is another TLS failure (a retry may mend it).
        let other = Wrapper(Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError));
        assert_eq!(certificate_error(&other), None);
    }

    #[tokio::test]
    async fn an_untrusted_server_certificate_is_permanent_and_says_ca_file() {
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().self_signed(&key).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let endpoint = format!("https://{address}");
        let text = format!("index = \"/x/index.json\"\nendpoint = \"{endpoint}\"\n");
        let config = Config::parse(std::path::Path::new("/x/config.toml"), &text).unwrap();
        let http = Http::new(&config, Ok(None)).unwrap();
        let error = http.resolve(&format!("{endpoint}/org/m/resolve/main/m.bin")).await.unwrap_err();
        assert!(matches!(*error.cause, Cause::Certificate { .. }), "{error:?}");
        assert_eq!(error.kind(), super::super::Kind::Permanent);
        assert_eq!(error.symptom(), super::super::Symptom::UntrustedCertificate);
        assert!(error.to_string().contains("set ca_file"), "{error}");
        let source = std::error::Error::source(&error).expect("the reqwest error as the source");
        assert!(certificate_error(source).is_some());
    }
}
