//! A hand-written HTTP/1.1 test origin with fault injection, for the `sync` tests.
//!
//! One [`Origin`] runs three servers on its own tokio runtime (background worker threads), on
//! three ports of the loopback range, so three different origins:
//!
//! - the **Hub** (`127.0.0.1`, plain http or https with a throwaway CA) holds repositories as
//!   the Hub does: a history of commits, each a set of files (a real git tree: folders, any
//!   characters in names, URL-decoded from requests), and refs (`main`, other branches) that
//!   point at commits; every commit stays resolvable by its id, so `main` can move
//!   ([`Origin::publish_repo`], or [`Origin::publish`] for one file on top of `main`). It
//!   answers `HEAD|GET /{org}/{name}/resolve/{revision}/{path}` as huggingface.co does: for a
//!   large (LFS) file a `302` to the CDN with a presigned query, `X-Repo-Commit`,
//!   `X-Linked-Etag` (the sha256), `X-Linked-Size` and a `Content-Length` that is the redirect
//!   body's; for a file kept in git a `200` with the bytes, `X-Repo-Commit` and the git blob
//!   sha1 as `ETag`. Its API answers with the real Hub's JSON field names:
//!   `GET /api/models/{repo}[/revision/{rev}]` (model info: `id`, `sha`, `private`, `gated`,
//!   `siblings: [{rfilename}]`, with `?blobs=true` also `size`, `blobId`, `lfs`),
//!   `GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]` (`{type, oid, size, path,
//!   lfs: {oid, size, pointerSize}}`, [`Origin::tree_page_size`] entries a page, the next
//!   page's URL in `Link: <...>; rel="next"`; each page resolves `rev` anew, so a `main` that
//!   moves between pages mixes commits, as a listing by branch name can on the Hub) and
//!   `GET /api/models/{repo}/auth-check`. It requires `Authorization: Bearer <token>` when
//!   started with a token; private repositories hide behind `401 RepoNotFound` and gated ones
//!   refuse their files with `401`/`403 GatedRepo` ([`Origin::make_private`],
//!   [`Origin::gate`]); a renamed repo answers `307` with a relative `Location`; errors carry
//!   `X-Error-Code`; [`Origin::serve_instead`] makes it serve a git file unlike its tree's oid.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::fixture::repo::{Repo, RepoFile, Storage};
use crate::fixture::{TOKEN, hex, sha256_hex};

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
    /// Any request to the Hub's API (`/api/...`): model info, tree, auth check.
    HubApi,
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
            (Host::Hub, _) if self.path().starts_with("/api/") => Some(Route::HubApi),
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

/// A commit [`Origin::publish_repo`] made.
#[derive(Debug, Clone)]
pub struct Commit {
    pub repo: String,
    /// The 40-hex commit id (a git commit over the real git tree of the files).
    pub id: String,
    /// Every file of the commit, sorted by path.
    pub files: Vec<PublishedFile>,
}

impl Commit {
    /// The file at `path`; panics when the commit has none.
    pub fn file(&self, path: &str) -> &PublishedFile {
        self.files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{}@{} has no {path:?}", self.repo, self.id))
    }
}

/// One file of a [`Commit`], with what the Hub's tree says of it.
#[derive(Debug, Clone)]
pub struct PublishedFile {
    pub path: String,
    /// Its bytes, sha256 and size; `commit` is the commit's id.
    pub blob: Blob,
    pub storage: Storage,
    /// The tree's `oid`: the git blob sha1 of the content (git) or of the LFS pointer (LFS).
    pub oid: String,
    /// The LFS pointer's size (the tree's `lfs.pointerSize`), for LFS files.
    pub pointer_size: Option<u64>,
}

/// A file of one commit, as the Hub stores it.
#[derive(Clone)]
struct HubFile {
    path: String,
    blob: Blob,
    /// Kept in git (served by the Hub itself) rather than in LFS (redirected to the CDN).
    in_git: bool,
    /// The git blob id the tree lists: of the content when in git, of the LFS pointer otherwise.
    oid: String,
}

/// One commit of a repository: every file it holds (sorted by path).
struct HubCommit {
    id: String,
    files: Vec<HubFile>,
}

struct HubRepo {
    id: String,
    /// Oldest first; every commit stays resolvable by its id.
    commits: Vec<HubCommit>,
    /// Branches (and tags): name -> commit id.
    refs: Vec<(String, String)>,
    private: bool,
    /// Gated: `Some(granted)`, whether the user of [`user_token`] was granted access.
    gated: Option<bool>,
}

impl HubRepo {
    /// The commit `revision` (a ref name or a commit id) points to.
    fn commit(&self, revision: &str) -> Option<&HubCommit> {
        let id = self.refs.iter().find(|(name, _)| name == revision).map_or(revision, |(_, id)| id.as_str());
        self.commits.iter().find(|c| c.id == id)
    }
}

struct State {
    token: Option<String>,
    repos: Vec<HubRepo>,
    /// Every blob ever published, by sha256, for the CDNs.
    blobs: Vec<Blob>,
    renames: Vec<(String, String)>,
    /// Bytes the Hub serves for a git file instead of the content its tree lists: (repo, path).
    served_instead: Vec<(String, String, Arc<Vec<u8>>)>,
    rules: Vec<Rule>,
    requests: Vec<Request>,
    signatures: u64,
    commits: u64,
    /// Entries per page of the tree endpoint.
    tree_page_size: usize,
    /// The CDN the Hub's 302s point to (`None`: the CDN).
    resolve_to: Option<Host>,
}

impl Default for State {
    fn default() -> Self {
        State {
            token: None,
            repos: Vec::new(),
            blobs: Vec::new(),
            renames: Vec::new(),
            served_instead: Vec::new(),
            rules: Vec::new(),
            requests: Vec::new(),
            signatures: 0,
            commits: 0,
            tree_page_size: TREE_PAGE_SIZE,
            resolve_to: None,
        }
    }
}

/// The Hub's page size for `tree` listings without `expand`.
pub const TREE_PAGE_SIZE: usize = 1000;

struct Shared {
    state: Mutex<State>,
    hub: String,
    cdn: String,
    cdn2: String,
    /// Per host (`Host as usize`): requests being answered now, and the most at once so far.
    answering: [AtomicUsize; 3],
    most_at_once: [AtomicUsize; 3],
}

/// One request being answered, counted in its host's `answering` until dropped.
struct Answering<'a> {
    shared: &'a Shared,
    host: usize,
}

impl<'a> Answering<'a> {
    fn new(shared: &'a Shared, host: Host) -> Self {
        let host = host as usize;
        let now = shared.answering[host].fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_at_once[host].fetch_max(now, Ordering::SeqCst);
        Answering { shared, host }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.shared.answering[self.host].fetch_sub(1, Ordering::SeqCst);
    }
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
            answering: Default::default(),
            most_at_once: Default::default(),
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

    /// Publishes `content` as an LFS file at `path` on `main` of `repo`, as a new commit that
    /// keeps the other files of `main`: resolving it redirects to the CDN.
    pub fn publish(&self, repo: &str, path: &str, content: Vec<u8>) -> Blob {
        self.add_file(repo, path, content, Storage::Lfs)
    }

    /// Publishes `content` as a file kept in git: the Hub serves it itself.
    pub fn publish_in_git(&self, repo: &str, path: &str, content: Vec<u8>) -> Blob {
        self.add_file(repo, path, content, Storage::Git)
    }

    fn add_file(&self, repo: &str, path: &str, content: Vec<u8>, storage: Storage) -> Blob {
        let mut files = self.head_files(repo, "main");
        let content = Arc::new(content);
        files.retain(|f| f.path != path);
        files.push(RepoFile { path: path.to_owned(), content, storage });
        let commit = self.commit_files(repo, "main", files, &format!("Upload {path}"));
        commit.file(path).blob.clone()
    }

    /// Publishes `files` as a new commit on `main` of `repo` holding exactly them (files of
    /// the previous commit not in `files` are gone): `main` moves to it, and the commit before
    /// stays resolvable by its id.
    pub fn publish_repo(&self, repo: &str, files: &Repo) -> Commit {
        self.publish_repo_on(repo, "main", files)
    }

    /// [`Origin::publish_repo`] on branch `branch` (created if new; `main` is not touched).
    pub fn publish_repo_on(&self, repo: &str, branch: &str, files: &Repo) -> Commit {
        self.commit_files(repo, branch, files.files.clone(), &format!("Publish {} files", files.files.len()))
    }

    /// The files of `revision` of `repo` (none if there is no such repo or revision).
    fn head_files(&self, repo: &str, revision: &str) -> Vec<RepoFile> {
        let state = self.shared.lock();
        let Some(commit) = state.repos.iter().find(|r| r.id == repo).and_then(|r| r.commit(revision)) else {
            return Vec::new();
        };
        commit
            .files
            .iter()
            .map(|f| RepoFile {
                path: f.path.clone(),
                content: f.blob.content.clone(),
                storage: if f.in_git { Storage::Git } else { Storage::Lfs },
            })
            .collect()
    }

    fn commit_files(&self, repo: &str, branch: &str, files: Vec<RepoFile>, message: &str) -> Commit {
        let mut state = self.shared.lock();
        state.commits += 1;
        let serial = state.commits;
        if !state.repos.iter().any(|r| r.id == repo) {
            let new =
                HubRepo { id: repo.to_owned(), commits: vec![], refs: vec![], private: false, gated: None };
            state.repos.push(new);
        }
        let parent =
            state.repos.iter().find(|r| r.id == repo).and_then(|r| r.commit(branch)).map(|c| c.id.clone());
        let mut hub_files: Vec<HubFile> = files
            .iter()
            .map(|f| {
                // A file carried over from the commit before is not hashed again.
                let known = state.blobs.iter().find(|b| Arc::ptr_eq(&b.content, &f.content));
                let blob = Blob {
                    sha256: known.map_or_else(|| sha256_hex(&f.content), |b| b.sha256.clone()),
                    size: f.content.len() as u64,
                    content: f.content.clone(),
                    commit: String::new(),
                };
                let in_git = f.storage == Storage::Git;
                let oid = if in_git {
                    git_blob_sha1(&blob.content)
                } else {
                    git_blob_sha1(lfs_pointer(&blob).as_bytes())
                };
                HubFile { path: f.path.clone(), blob, in_git, oid }
            })
            .collect();
        hub_files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut seen = std::collections::BTreeSet::new();
        for f in &hub_files {
            assert!(seen.insert(f.path.as_str()), "{repo}: {} twice in one commit", f.path);
        }
        let (root, _) = tree_oids(&hub_files);
        let id = git_commit_sha1(&root, parent.as_deref(), serial, message);
        for f in &mut hub_files {
            f.blob.commit = id.clone();
        }
        for f in hub_files.iter().filter(|f| !f.in_git) {
            if !state.blobs.iter().any(|b| b.sha256 == f.blob.sha256) {
                state.blobs.push(f.blob.clone());
            }
        }
        let published = Commit {
            repo: repo.to_owned(),
            id: id.clone(),
            files: hub_files
                .iter()
                .map(|f| PublishedFile {
                    path: f.path.clone(),
                    blob: f.blob.clone(),
                    storage: if f.in_git { Storage::Git } else { Storage::Lfs },
                    oid: f.oid.clone(),
                    pointer_size: (!f.in_git).then(|| lfs_pointer(&f.blob).len() as u64),
                })
                .collect(),
        };
        let entry = state.repos.iter_mut().find(|r| r.id == repo).expect("repo created above");
        entry.commits.push(HubCommit { id: id.clone(), files: hub_files });
        entry.refs.retain(|(name, _)| name != branch);
        entry.refs.push((branch.to_owned(), id));
        published
    }

    /// The commit `revision` of `repo` points to now.
    pub fn commit_of(&self, repo: &str, revision: &str) -> Option<String> {
        let state = self.shared.lock();
        state.repos.iter().find(|r| r.id == repo)?.commit(revision).map(|c| c.id.clone())
    }

    /// `repo` becomes private: without the user's token ([`user_token`]) its resolves and API
    /// answers are `401` with `X-Error-Code: RepoNotFound`, as the Hub hides that it exists.
    pub fn make_private(&self, repo: &str) {
        self.with_repo(repo, |r| r.private = true);
    }

    /// `repo` becomes gated: its model info (with `"gated": "manual"`) and tree stay public, as on
    /// the Hub; its files answer `401` without a token and, unless `granted`, `403` to the user's
    /// token, both with `X-Error-Code: GatedRepo`.
    pub fn gate(&self, repo: &str, granted: bool) {
        self.with_repo(repo, |r| r.gated = Some(granted));
    }

    /// From now on the Hub serves `content` for the git file `path` of `repo` at every commit,
    /// while its tree and `ETag` still name the file's real git blob id.
    pub fn serve_instead(&self, repo: &str, path: &str, content: Vec<u8>) {
        let mut state = self.shared.lock();
        state.served_instead.retain(|(r, p, _)| !(r == repo && p == path));
        state.served_instead.push((repo.to_owned(), path.to_owned(), Arc::new(content)));
    }

    /// Entries per page of the tree endpoint (the Hub's is [`TREE_PAGE_SIZE`]).
    pub fn tree_page_size(&self, entries: usize) {
        self.shared.lock().tree_page_size = entries.max(1);
    }

    fn with_repo(&self, repo: &str, change: impl FnOnce(&mut HubRepo)) {
        let mut state = self.shared.lock();
        let entry = state.repos.iter_mut().find(|r| r.id == repo);
        change(entry.unwrap_or_else(|| panic!("{repo} is not published")));
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

    /// The most requests `host` was answering at one time so far (each request has its own
    /// connection: the server closes it after the answer). A request is counted from its
    /// connection's accept until the last byte of its body is sent.
    pub fn most_at_once(&self, host: Host) -> usize {
        self.shared.most_at_once[host as usize].load(Ordering::SeqCst)
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
    let answering = Answering::new(shared, host);
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
        let _ = send(&mut conn, &request, bad, None, answering).await;
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
                hub_answer(&mut state, &request, &shared.hub, &cdn)
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
    let _ = send(&mut conn, &request, answer, fault.as_ref(), answering).await;
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
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).expect("JSON");
    Answer::Plain { status, headers, body }
}

/// The token of the origin's user: the one the Hub requires, or [`TOKEN`] when it requires
/// none (then only private and gated repositories look at it).
pub fn user_token(origin_token: Option<&str>) -> String {
    origin_token.unwrap_or(TOKEN).to_owned()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Whether `request` carries the user's token.
fn authorized(state: &State, request: &Request) -> bool {
    request.header("authorization") == Some(&format!("Bearer {}", user_token(state.token.as_deref())))
}

/// The Hub's refusal of `request` to `repo`, if any: `files` for downloads (where a gate holds),
/// not for the public metadata of a gated repository.
fn refusal(state: &State, repo: &HubRepo, request: &Request, files: bool) -> Option<Answer> {
    let user = authorized(state, request);
    if repo.private && !user {
        return Some(hub_error(401, Some("RepoNotFound"), "Repository not found"));
    }
    match repo.gated {
        Some(granted) if files && !(user && granted) => Some(if user {
            let message = format!(
                "Access to model {0} is restricted and you are not in the authorized list. \
                 Visit https://huggingface.co/{0} to ask for access.",
                repo.id
            );
            hub_error(403, Some("GatedRepo"), &message)
        } else {
            let message = format!(
                "Access to model {} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                repo.id
            );
            hub_error(401, Some("GatedRepo"), &message)
        }),
        _ => None,
    }
}

/// The Hub: `/{org}/{name}/resolve/{revision}/{path}` and the `/api/models/...` endpoints.
fn hub_answer(state: &mut State, request: &Request, hub: &str, cdn: &str) -> Answer {
    if let Some(token) = &state.token
        && request.header("authorization") != Some(&format!("Bearer {token}"))
    {
        return hub_error(401, None, "Invalid credentials in Authorization header");
    }
    if let Some(rest) = request.path().strip_prefix("/api/models/") {
        return api_answer(state, request, rest, hub);
    }
    resolve_answer(state, request, cdn)
}

/// `/{org}/{name}/resolve/{revision}/{path}` as the Hub answers it.
fn resolve_answer(state: &mut State, request: &Request, cdn: &str) -> Answer {
    let segments: Vec<&str> = request.path().trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", revision_raw, path_raw] = segments[..] else {
        return hub_error(404, None, "Not found");
    };
    let repo = format!("{org}/{name}");
    if let Some((_, to)) = state.renames.iter().find(|(from, _)| *from == repo) {
        let location = format!("/{to}/resolve/{revision_raw}/{path_raw}");
        let body = format!("Temporary Redirect. Redirecting to {location}").into_bytes();
        return Answer::Plain { status: 307, headers: vec![("Location".into(), location)], body };
    }
    let (revision, path) = (decode(revision_raw), decode(path_raw));
    let Some(hub_repo) = state.repos.iter().find(|r| r.id == repo) else {
        return hub_error(401, Some("RepoNotFound"), "Repository not found");
    };
    if let Some(refused) = refusal(state, hub_repo, request, true) {
        return refused;
    }
    let Some(commit) = hub_repo.commit(&revision) else {
        return hub_error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {revision}"));
    };
    let Some(file) = commit.files.iter().find(|f| f.path == path) else {
        let mut answer = hub_error(404, Some("EntryNotFound"), "Entry not found");
        if let Answer::Plain { headers, .. } = &mut answer {
            headers.push(("X-Repo-Commit".to_owned(), commit.id.clone()));
        }
        return answer;
    };
    let blob = &file.blob;
    if file.in_git {
        let served = state.served_instead.iter().find(|(r, p, _)| *r == repo && *p == path);
        let headers = vec![
            ("X-Repo-Commit".to_owned(), commit.id.clone()),
            ("ETag".to_owned(), format!("\"{}\"", file.oid)),
        ];
        let content = served.map_or_else(|| blob.content.clone(), |(_, _, content)| content.clone());
        return Answer::Bytes { headers, content };
    }
    let (commit_id, oid) = (commit.id.clone(), file.oid.clone());
    state.signatures += 1;
    let location = format!(
        "{cdn}/blobs/{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={SIGNATURE_MARKER}{:06}",
        blob.sha256, state.signatures
    );
    let headers = vec![
        ("Location".to_owned(), location.clone()),
        ("X-Repo-Commit".to_owned(), commit_id),
        ("X-Linked-Etag".to_owned(), format!("\"{}\"", blob.sha256)),
        ("X-Linked-Size".to_owned(), blob.size.to_string()),
        ("ETag".to_owned(), format!("\"{oid}\"")),
    ];
    Answer::Plain { status: 302, headers, body: format!("Found. Redirecting to {location}").into_bytes() }
}

fn json_answer(value: &serde_json::Value, extra: Vec<(String, String)>) -> Answer {
    let mut headers = vec![("Content-Type".to_owned(), "application/json; charset=utf-8".to_owned())];
    headers.extend(extra);
    Answer::Plain { status: 200, headers, body: serde_json::to_vec(value).expect("JSON") }
}

/// `/api/models/{org}/{name}[/revision/{rev}|/tree/{rev}[/{path}]|/auth-check]`, `rest` being
/// what follows `/api/models/`, still percent-encoded.
fn api_answer(state: &State, request: &Request, rest: &str, hub: &str) -> Answer {
    let segments: Vec<&str> = rest.split('/').collect();
    let (org, name) = match segments[..] {
        [org, name, ..] if !org.is_empty() && !name.is_empty() => (org, name),
        _ => return hub_error(404, None, "Not found"),
    };
    let repo = format!("{}/{}", decode(org), decode(name));
    let Some(hub_repo) = state.repos.iter().find(|r| r.id == repo) else {
        return hub_error(401, Some("RepoNotFound"), "Repository not found");
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(request.target.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .into_owned()
            .collect();
    let flag = |key: &str| query.iter().any(|(k, v)| k == key && matches!(v.as_str(), "true" | "True" | "1"));
    match segments[2..] {
        [] | ["revision", _] => {
            if let Some(refused) = refusal(state, hub_repo, request, false) {
                return refused;
            }
            let revision = segments.get(3).map_or_else(|| "main".to_owned(), |r| decode(r));
            let Some(commit) = hub_repo.commit(&revision) else {
                return hub_error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {revision}"));
            };
            json_answer(&model_info(hub_repo, commit, flag("blobs")), vec![])
        }
        ["tree", revision_raw, ..] => {
            if let Some(refused) = refusal(state, hub_repo, request, false) {
                return refused;
            }
            let revision = decode(revision_raw);
            let Some(commit) = hub_repo.commit(&revision) else {
                return hub_error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {revision}"));
            };
            let path_raw = segments[4..].join("/");
            let path = decode(&path_raw);
            let entries = tree_entries(commit, &path, flag("recursive"));
            if !path.is_empty() && entries.is_none() {
                return hub_error(
                    404,
                    Some("EntryNotFound"),
                    &format!("{path} does not exist on \"{revision}\""),
                );
            }
            let entries = entries.unwrap_or_default();
            let start = query
                .iter()
                .find(|(k, _)| k == "cursor")
                .and_then(|(_, v)| v.strip_prefix("page-")?.parse::<usize>().ok())
                .unwrap_or(0)
                .min(entries.len());
            let end = (start + state.tree_page_size).min(entries.len());
            let mut link = vec![];
            if end < entries.len() {
                let mut next = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in query.iter().filter(|(k, _)| k != "cursor") {
                    next.append_pair(k, v);
                }
                next.append_pair("cursor", &format!("page-{end}"));
                let tail = if path_raw.is_empty() { String::new() } else { format!("/{path_raw}") };
                let url =
                    format!("{hub}/api/models/{org}/{name}/tree/{revision_raw}{tail}?{}", next.finish());
                link.push(("Link".to_owned(), format!("<{url}>; rel=\"next\"")));
            }
            json_answer(&serde_json::Value::Array(entries[start..end].to_vec()), link)
        }
        ["auth-check"] => match refusal(state, hub_repo, request, true) {
            Some(refused) => refused,
            None => json_answer(&serde_json::json!({}), vec![]),
        },
        _ => hub_error(404, None, "Not found"),
    }
}

/// The model info the Hub answers for `commit` of `repo` (`blobs`: with each sibling's size,
/// blob id and LFS data).
fn model_info(repo: &HubRepo, commit: &HubCommit, blobs: bool) -> serde_json::Value {
    let siblings: Vec<serde_json::Value> = commit
        .files
        .iter()
        .map(|f| {
            let mut sibling = serde_json::json!({ "rfilename": f.path });
            if blobs {
                sibling["blobId"] = f.oid.clone().into();
                sibling["size"] = f.blob.size.into();
                if !f.in_git {
                    sibling["lfs"] = serde_json::json!({
                        "sha256": f.blob.sha256,
                        "size": f.blob.size,
                        "pointerSize": lfs_pointer(&f.blob).len(),
                    });
                }
            }
            sibling
        })
        .collect();
    let author = repo.id.split('/').next().unwrap_or_default();
    serde_json::json!({
        "_id": &sha256_hex(repo.id.as_bytes())[..24],
        "id": repo.id,
        "modelId": repo.id,
        "author": author,
        "sha": commit.id,
        "lastModified": "2026-01-01T00:00:00.000Z",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "private": repo.private,
        "gated": repo.gated.map_or(serde_json::Value::Bool(false), |_| "manual".into()),
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "spaces": [],
        "usedStorage": commit.files.iter().map(|f| f.blob.size).sum::<u64>(),
    })
}

/// The tree endpoint's entries under `path` ("" = the root) of `commit`, sorted by path; only
/// its direct children unless `recursive`. `None` when `path` is no folder of the commit.
fn tree_entries(commit: &HubCommit, path: &str, recursive: bool) -> Option<Vec<serde_json::Value>> {
    let (_, dirs) = tree_oids(&commit.files);
    if !path.is_empty() && !dirs.contains_key(path) {
        return None;
    }
    let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
    let wanted = |p: &str| p.strip_prefix(&prefix).is_some_and(|rest| recursive || !rest.contains('/'));
    let mut entries: Vec<(String, serde_json::Value)> = dirs
        .iter()
        .filter(|(dir, _)| !dir.is_empty() && wanted(dir))
        .map(|(dir, oid)| {
            (dir.clone(), serde_json::json!({"type": "directory", "oid": oid, "size": 0, "path": dir}))
        })
        .collect();
    for f in commit.files.iter().filter(|f| wanted(&f.path)) {
        let mut entry =
            serde_json::json!({"type": "file", "oid": f.oid, "size": f.blob.size, "path": f.path});
        if !f.in_git {
            entry["lfs"] = serde_json::json!({
                "oid": f.blob.sha256,
                "size": f.blob.size,
                "pointerSize": lfs_pointer(&f.blob).len(),
            });
        }
        entries.push((f.path.clone(), entry));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Some(entries.into_iter().map(|(_, e)| e).collect())
}

/// The LFS pointer file git keeps for `blob`.
fn lfs_pointer(blob: &Blob) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n", blob.sha256, blob.size)
}

/// The git tree ids of `files` (sorted by path): the root's, and every folder's by its path
/// (the root as "").
fn tree_oids(files: &[HubFile]) -> (String, std::collections::BTreeMap<String, String>) {
    fn hash_dir(
        prefix: &str,
        files: &[&HubFile],
        dirs: &mut std::collections::BTreeMap<String, String>,
    ) -> String {
        // (name as git sorts it, mode, name, raw oid)
        let mut entries: Vec<(Vec<u8>, &str, String, Vec<u8>)> = Vec::new();
        let mut subdirs = std::collections::BTreeSet::new();
        for f in files {
            let rest = &f.path[prefix.len()..];
            match rest.split_once('/') {
                None => entries.push((rest.as_bytes().to_vec(), "100644", rest.to_owned(), unhex(&f.oid))),
                Some((dir, _)) => {
                    subdirs.insert(dir.to_owned());
                }
            }
        }
        for dir in subdirs {
            let sub_prefix = format!("{prefix}{dir}/");
            let inside: Vec<&HubFile> =
                files.iter().copied().filter(|f| f.path.starts_with(&sub_prefix)).collect();
            let oid = hash_dir(&sub_prefix, &inside, dirs);
            entries.push((format!("{dir}/").into_bytes(), "40000", dir, unhex(&oid)));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut body = Vec::new();
        for (_, mode, name, oid) in &entries {
            body.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            body.extend_from_slice(oid);
        }
        let oid = git_object_sha1("tree", &body);
        dirs.insert(prefix.trim_end_matches('/').to_owned(), oid.clone());
        oid
    }
    let mut dirs = std::collections::BTreeMap::new();
    let root = hash_dir("", &files.iter().collect::<Vec<_>>(), &mut dirs);
    (root, dirs)
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// A git commit id over `tree`, after `parent`.
fn git_commit_sha1(tree: &str, parent: Option<&str>, serial: u64, message: &str) -> String {
    let mut body = format!("tree {tree}\n");
    if let Some(parent) = parent {
        body.push_str(&format!("parent {parent}\n"));
    }
    let when = 1_767_225_600 + serial;
    body.push_str(&format!("author Test <test@example.invalid> {when} +0000\n"));
    body.push_str(&format!("committer Test <test@example.invalid> {when} +0000\n\n{message}\n"));
    git_object_sha1("commit", body.as_bytes())
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
/// The request counts as being answered until the last byte of a whole body goes out.
async fn send<C: Conn>(
    conn: &mut C,
    request: &Request,
    answer: Answer,
    fault: Option<&Fault>,
    answering: Answering<'_>,
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
            let mut pieces = body.chunks((*chunk).max(1)).peekable();
            while let Some(piece) = pieces.next() {
                tokio::time::sleep(*every).await;
                if pieces.peek().is_none() {
                    write_last(conn, piece, answering).await?;
                    break;
                }
                conn.write_all(piece).await?;
                conn.flush().await?;
            }
        }
        _ => write_last(conn, body, answering).await?,
    }
    conn.shutdown().await
}

/// Writes the end of a body, no longer counting its request (dropping `answering`) just before
/// the last byte goes out: a client that opens its next connection once it has a whole body is
/// never counted twice, however late this task gets to close the old one.
async fn write_last<C: Conn>(conn: &mut C, end: &[u8], answering: Answering<'_>) -> std::io::Result<()> {
    let (most, last) = end.split_at(end.len().saturating_sub(1));
    conn.write_all(most).await?;
    drop(answering);
    conn.write_all(last).await?;
    conn.flush().await
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
pub fn git_blob_sha1(content: &[u8]) -> String {
    git_object_sha1("blob", content)
}

/// The id of a git object of `kind`: `sha1("<kind> <len>\0" + body)`.
fn git_object_sha1(kind: &str, body: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("{kind} {}\0", body.len()).as_bytes());
    hasher.update(body);
    hex(&hasher.finalize())
}
