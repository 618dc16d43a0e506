//! Fetching one file from one origin into its partial file: the Hub (resolve, compare with the
//! index, then download from where it points), a plain URL, or a content-addressed mirror.
//! Downloads resume from the partial file when the server honours `Range`, and are retried
//! with backoff on transient failures. The bytes are verified as they stream (`verify`).

pub mod error;
pub mod http;
pub(crate) mod pace;
pub mod partial;
pub mod ranges;
pub mod retry;
pub mod slot;

use std::path::Path;
use std::time::Instant;

use error::{Cause, Part};
pub use error::{FetchError, Kind, Symptom};
pub use http::Http;
use partial::Partial;
use reqwest::StatusCode;
use tokio::io::AsyncReadExt;

use crate::index::HubFile;
use crate::secret::redact;
use crate::sink::{Feed, Sink, SinkError};
use crate::verify::{self, Expected};

/// One place to get a file from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Hub(HubFile),
    Url(String),
    /// A mirror base: `http(s)://...` or `file:///...`; the file is `{base}/{sha256}`.
    Mirror(String),
}

impl Origin {
    /// The origin as it may be shown in logs (query strings removed).
    pub fn describe(&self) -> String {
        match self {
            Origin::Hub(hub) => format!("hub {}", redact(&hub.resolve_url())),
            Origin::Url(url) => format!("url {}", redact(url)),
            Origin::Mirror(base) => format!("mirror {}", redact(base)),
        }
    }
}

/// A file fetched and verified into its partial file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The Hub commit, when the file was resolved on the Hub.
    pub commit: Option<String>,
    /// Bytes received over the network (or copied) by this fetch, resumes included.
    pub transferred: u64,
}

/// Progress callback: bytes of the file now in the partial file.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Fetches `expected` from `origin` into `partial`, retrying transient failures under `policy`.
/// On success the partial file holds exactly the expected bytes, fsync'd.
pub async fn fetch(
    http: &Http,
    policy: &retry::Policy,
    origin: &Origin,
    partial: &Path,
    expected: &Expected,
    progress: Progress<'_>,
    slot: &slot::ModelSlot,
) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let mut budget = retry::Budget::new(*policy, 0);
    let mut restarted = false;
    let mut expired_before = false;
    let mut transferred = 0;
    // The most of the file the partial file has held: failures after progress refill the budget.
    let held = std::sync::atomic::AtomicU64::new(0);
    let tracked = |position: u64| {
        held.fetch_max(position, std::sync::atomic::Ordering::Relaxed);
        progress(position);
    };
    loop {
        let attempt_started = Instant::now();
        let mut attempt =
            Attempt { http, partial, expected, progress: &tracked, slot, transferred: 0, resumed: false };
        let result = attempt.run(origin).await;
        transferred += attempt.transferred;
        let mut error = match result {
            Ok(commit) => return Ok(Fetched { commit, transferred }),
            Err(error) => error,
        };
        if error.kind() == Kind::Integrity {
            remove_partial(partial);
            if attempt.resumed && !restarted {
                // The bytes kept from before may be what is wrong: one fresh start.
                tracing::warn!(partial = %partial.display(), "{error}; starting over without the partial file");
                restarted = true;
                continue;
            }
            return Err(error);
        }
        if let Cause::Expired { again, .. } = &mut *error.cause {
            if expired_before {
                *again = true;
                return Err(error);
            }
            expired_before = true;
            tracing::info!("{error}; resolving again");
            continue;
        }
        if error.kind() != Kind::Transient {
            return Err(error);
        }
        let now_held = held.load(std::sync::atomic::Ordering::Relaxed);
        match budget.after_failure(attempt_started.elapsed(), now_held, error.retry_after(), fastrand::f64())
        {
            Some(delay) => {
                tracing::warn!(
                    retry = budget.retries(),
                    max_retries = policy.max_retries,
                    "{error}; retrying in {}",
                    humantime::format_duration(round_ms(delay))
                );
                tokio::time::sleep(delay).await;
            }
            None => {
                error.gave_up = Some((budget.retries(), round_ms(started.elapsed())));
                return Err(error);
            }
        }
    }
}

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn remove_partial(partial: &Path) {
    partial::remove(partial);
}

/// One try at one origin.
struct Attempt<'a> {
    http: &'a Http,
    partial: &'a Path,
    expected: &'a Expected,
    progress: Progress<'a>,
    /// The model's download slot, held while this attempt transfers.
    slot: &'a slot::ModelSlot,
    transferred: u64,
    /// Whether bytes from an earlier partial file were kept.
    resumed: bool,
}

impl Attempt<'_> {
    /// Returns the Hub commit, if any.
    async fn run(&mut self, origin: &Origin) -> Result<Option<String>, FetchError> {
        match origin {
            Origin::Hub(hub) => {
                let resolved = self.http.resolve(&hub.resolve_url()).await?;
                compare_with_index(&resolved, self.expected, hub)?;
                self.download(&resolved.location).await?;
                Ok(Some(resolved.commit))
            }
            Origin::Url(url) => self.download(url).await.map(|()| None),
            Origin::Mirror(base) => {
                let name = self.expected.sha256.as_str();
                match base.strip_prefix("file://") {
                    Some(dir) => self.copy_local(&Path::new(dir).join(name)).await?,
                    None => self.download(&format!("{base}/{name}")).await?,
                }
                Ok(None)
            }
        }
    }

    /// A sink error on this attempt's partial file.
    fn sink_error(&self) -> impl FnOnce(SinkError) -> FetchError + '_ {
        |e| FetchError::sink(self.partial, e)
    }

    async fn download(&mut self, url: &str) -> Result<(), FetchError> {
        let _slot = self.slot.transfer(self.http).await;
        let mut state = Partial::read(self.partial, self.expected);
        if self.http.connections_per_file > 1 && self.expected.size >= 2 * self.http.chunk_size {
            let transferred = std::sync::atomic::AtomicU64::new(0);
            if let Partial::Ranges(on_disk) = &state {
                self.resumed |= !on_disk.is_empty();
            }
            let ended = ranges::download(
                self.http,
                url,
                self.partial,
                state,
                self.expected,
                self.progress,
                &transferred,
                &self.slot.connections,
            )
            .await;
            self.transferred += transferred.load(std::sync::atomic::Ordering::Relaxed);
            match ended? {
                ranges::Ended::Done(written) => return Ok(verify::check(&written, self.expected)?),
                ranges::Ended::NoRanges => {
                    tracing::info!(url = %redact(url), "the server ignores Range; one stream instead");
                    state = Partial::Absent;
                }
            }
        }
        let mut from = match state {
            Partial::Prefix(len) => len,
            Partial::Absent => 0,
            Partial::Ranges(_) | Partial::Stale => {
                // A parallel download's partial is whole-size with holes: not a stream prefix.
                partial::remove(self.partial);
                0
            }
        };
        if from > 0 && from == self.expected.size {
            // Complete already (a crash between the last byte and the rename): verify it.
            self.resumed = true;
            let sink = Sink::stream(self.partial, from, self.expected.size).map_err(self.sink_error())?;
            let feed = sink.feed(from);
            return self.end(sink, feed, Ok(()), url).await;
        }
        let mut response = match self.http.get(url, from).await {
            Err(e) if matches!(*e.cause, Cause::RangeNotSatisfiable { .. }) => {
                // The server says our partial is past its end: start over.
                self.http.get(url, 0).await.inspect(|_| from = 0)?
            }
            other => other?,
        };
        if from > 0 {
            if response.status() == StatusCode::PARTIAL_CONTENT
                && http::content_range_matches(
                    response.headers().get(reqwest::header::CONTENT_RANGE),
                    from,
                    self.expected.size,
                )
            {
                self.resumed = true;
                tracing::info!(from, url = %redact(url), "resuming");
            } else if response.status() == StatusCode::PARTIAL_CONTENT {
                tracing::warn!(url = %redact(url), "wrong Content-Range for a resume; starting over");
                from = 0;
                response = self.http.get(url, 0).await?;
            } else {
                tracing::info!(url = %redact(url), "the server ignored the range; starting over");
                from = 0;
            }
        }
        if response.status() == StatusCode::PARTIAL_CONTENT && from == 0 {
            return Err(Cause::UnaskedRange { url: redact(url) }.into());
        }
        if let Some(length) = response.content_length()
            && from + length != self.expected.size
        {
            let (sends, size) = (from + length, self.expected.size);
            return Err(Cause::WrongLength { url: redact(url), sends, size }.into());
        }
        let sink = Sink::stream(self.partial, from, self.expected.size).map_err(self.sink_error())?;
        let mut feed = sink.feed(from);
        (self.progress)(from);
        let received = self.receive(&mut response, url, &mut feed).await;
        self.end(sink, feed, received, url).await
    }

    /// Streams the body into `feed` until it ends.
    async fn receive(
        &mut self,
        response: &mut reqwest::Response,
        url: &str,
        feed: &mut Feed,
    ) -> Result<(), FetchError> {
        let mut pace = self.http.pace();
        while let Some(piece) = self
            .http
            .next_chunk_paced(response, url, &mut pace, || {
                let _ = feed.flush();
            })
            .await?
        {
            if feed.position() + piece.len() as u64 > self.expected.size {
                let part = Part::File { size: self.expected.size };
                return Err(Cause::TooLong { from: redact(url), part }.into());
            }
            feed.push(&piece).await?;
            self.transferred += piece.len() as u64;
            (self.progress)(feed.position());
        }
        Ok(())
    }

    /// Ends a one-stream sink: the file is complete and checked, or whatever was received is
    /// kept for a resume and the error says how far it got.
    async fn end(
        &mut self,
        sink: Sink,
        mut feed: Feed,
        received: Result<(), FetchError>,
        source: &str,
    ) -> Result<(), FetchError> {
        let flushed = feed.flush();
        drop(feed);
        // A failed writer or hasher is the cause of a receiver's "the writer stopped".
        let ended = sink.end().await.map_err(self.sink_error())?;
        received?;
        flushed?;
        match &ended.complete {
            Some(written) => Ok(verify::check(written, self.expected)?),
            None => {
                let (got, part) = (ended.prefix(), Part::File { size: self.expected.size });
                Err(Cause::Cut { from: redact(source), got, part }.into())
            }
        }
    }

    /// Copies from a `file://` mirror through the same verifying pipeline.
    async fn copy_local(&mut self, source: &Path) -> Result<(), FetchError> {
        let _slot = self.slot.transfer(self.http).await;
        // A regular file only: a FIFO or a device at the blob's name fails this origin at once
        // (the next is tried), never blocking the open or reading without end.
        let opened = {
            let source = source.to_path_buf();
            tokio::task::spawn_blocking(move || crate::fsx::open_regular(&source))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let mut file = match opened {
            Ok(file) => match file.metadata() {
                // Of another size: refused before a byte is copied.
                Ok(meta) if meta.len() != self.expected.size => {
                    let (path, is, size) = (source.display().to_string(), meta.len(), self.expected.size);
                    return Err(Cause::MirrorSize { path, is, size }.into());
                }
                _ => tokio::fs::File::from_std(file),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Cause::NotInMirror { path: source.display().to_string() }.into());
            }
            Err(e) => return Err(Cause::Mirror { path: source.display().to_string(), source: e }.into()),
        };
        let sink = Sink::stream(self.partial, 0, self.expected.size).map_err(self.sink_error())?;
        let mut feed = sink.feed(0);
        let copied = self.copy_into(&mut file, source, &mut feed).await;
        self.end(sink, feed, copied, &source.display().to_string()).await
    }

    async fn copy_into(
        &mut self,
        file: &mut tokio::fs::File,
        source: &Path,
        feed: &mut Feed,
    ) -> Result<(), FetchError> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(0) if feed.position() < self.expected.size => {
                    let (from, got, size) =
                        (source.display().to_string(), feed.position(), self.expected.size);
                    return Err(Cause::Short { from, got, size }.into());
                }
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => return Err(Cause::Mirror { path: source.display().to_string(), source: e }.into()),
            };
            if feed.position() + n as u64 > self.expected.size {
                let part = Part::File { size: self.expected.size };
                return Err(Cause::TooLong { from: source.display().to_string(), part }.into());
            }
            feed.push(&buf[..n]).await?;
            self.transferred += n as u64;
            (self.progress)(feed.position());
        }
    }
}

/// Before downloading: the Hub's etag and size must be the index's. The etag is the sha256 for
/// an LFS file (`X-Linked-Etag`), the git blob sha1 for a small file kept in git (`ETag`),
/// compared with the index's `gitOid` when it gives one.
fn compare_with_index(
    resolved: &http::Resolved,
    expected: &Expected,
    hub: &HubFile,
) -> Result<(), FetchError> {
    let changed = |what: &'static str, hub_value: &str, index_value: &str| -> FetchError {
        Cause::HubContradicts {
            file: format!("{} @ {} ({})", hub.repo, hub.revision, hub.path),
            what,
            hub: hub_value.to_owned(),
            index: index_value.to_owned(),
        }
        .into()
    };
    if let Some(etag) = &resolved.etag
        && etag.len() == 64
        && etag.bytes().all(|b| b.is_ascii_hexdigit())
        && !etag.eq_ignore_ascii_case(expected.sha256.as_str())
    {
        return Err(changed("sha256 (X-Linked-Etag)", etag, expected.sha256.as_str()));
    }
    if let (Some(etag), Some(git_oid)) = (&resolved.etag, &expected.git_oid)
        && etag.len() == 40
        && etag.bytes().all(|b| b.is_ascii_hexdigit())
        && !etag.eq_ignore_ascii_case(git_oid)
    {
        return Err(changed("git blob sha1 (ETag)", etag, git_oid));
    }
    if let Some(size) = resolved.size
        && size != expected.size
    {
        return Err(changed("size", &size.to_string(), &expected.size.to_string()));
    }
    Ok(())
}
