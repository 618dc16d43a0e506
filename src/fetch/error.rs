//! What went wrong with one attempt to fetch a file, and what that means for retrying.
//!
//! A `FetchError` is its `Cause`: what happened, with the data it needs. The kind (retry,
//! next source, wrong bytes, local disk), the message and the few words of the status line
//! are all derived from the cause, and every decision matches on it, never on the text.

use std::fmt;
use std::io;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::sink::{SinkError, Stopped};
use crate::verify::Mismatch;

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worth another try from the same source after a pause (network faults, 408, 429, 5xx,
    /// stalls).
    Transient,
    /// This source will not give the file (401, 403, 404, a Hub answer that contradicts the
    /// index); the next source may.
    Permanent,
    /// The bytes were not the ones the index names (wrong sha256 or size).
    Integrity,
    /// The local disk failed (no space, permissions): no other source can help.
    Local,
}

impl Kind {
    /// `transient`, `permanent`, `integrity` or `local` (`ERROR_KIND` in the journal).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Transient => "transient",
            Kind::Permanent => "permanent",
            Kind::Integrity => "integrity",
            Kind::Local => "local",
        }
    }

    /// Whether a later try can succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        self == Kind::Transient
    }
}

/// A failure in the few words of the daemon's status line (`1 failed: id (checksum mismatch)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Symptom {
    ChecksumMismatch,
    SizeMismatch,
    /// Other bytes than asked for (a wrong `Content-Range`, more than a range).
    WrongBytes,
    /// The Hub's sha256 or size is not the index's.
    UpstreamChanged,
    NotFound,
    /// 401, 403, or a presigned URL refused.
    Denied,
    UntrustedCertificate,
    /// Another permanent refusal: the journal has the details.
    Refused,
    /// A transient failure: another try follows.
    Retrying,
    DiskFull,
    DiskError,
}

impl Symptom {
    /// A local I/O failure: a full disk by its errno, any other a disk error.
    pub fn of_io(error: &io::Error) -> Self {
        if is_disk_full(error) { Symptom::DiskFull } else { Symptom::DiskError }
    }

    pub fn words(self) -> &'static str {
        match self {
            Symptom::ChecksumMismatch => "checksum mismatch",
            Symptom::SizeMismatch => "size mismatch",
            Symptom::WrongBytes => "wrong bytes",
            Symptom::UpstreamChanged => "upstream changed",
            Symptom::NotFound => "not found",
            Symptom::Denied => "access denied",
            Symptom::UntrustedCertificate => "untrusted certificate",
            Symptom::Refused => "see journal",
            Symptom::Retrying => "retrying",
            Symptom::DiskFull => "disk full",
            Symptom::DiskError => "disk error",
        }
    }
}

/// An HTTP answer that is not a success: where from, its status and the Hub's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Redacted.
    pub url: String,
    pub status: StatusCode,
    /// `X-Error-Code`.
    pub code: Option<String>,
    /// `X-Error-Message`.
    pub message: Option<String>,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.status)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// Which bytes a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The bytes `start..end` of a parallel download.
    Range { start: u64, end: u64 },
    /// The whole file (from wherever the stream started).
    File { size: u64 },
}

/// A redirect that is not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// No readable `Location`.
    Unreadable,
    /// To a scheme other than http(s).
    Scheme(String),
    /// From https to plain http (the URL it points at, redacted).
    Downgrade { scheme: String, next: String },
    /// More than this many in a row.
    TooMany(usize),
}

/// What happened. Every URL in here is redacted; no message holds a token or a presigned
/// query string.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("{url}: not a URL: {source}")]
    BadUrl { url: String, source: url::ParseError },
    #[error("{url}: no answer within {}", humantime::format_duration(*after))]
    NoAnswer { url: String, after: Duration },
    /// A request that got no HTTP answer (connect, reset, TLS hiccup, timeout). The error has
    /// no URL (`without_url`), so printing its chain leaks no query string.
    #[error("{url}: {}", describe(source))]
    Transport { url: String, source: reqwest::Error },
    /// The proxy the request goes through could not be reached.
    #[error(
        "{url}: cannot reach the proxy {proxy}: {} (check the proxy setting or HTTPS_PROXY)",
        describe(source)
    )]
    Proxy { url: String, proxy: String, source: reqwest::Error },
    /// The server's certificate is not trusted: found as `rustls::Error` in the error's chain.
    #[error("{url}: {} (set ca_file to trust a private CA)", describe(source))]
    Certificate { url: String, source: reqwest::Error },
    /// `retry_after` is the server's own wait (`Retry-After`, `RateLimit`) of a transient one.
    #[error("{answer}{hint}")]
    Http { answer: Answer, hint: String, retry_after: Option<Duration> },
    /// A CDN refused a presigned URL: resolve again from the Hub (`again`: that was done).
    #[error(
        "{answer} (the presigned URL may have expired){}",
        if *again { "; a fresh URL from the Hub was refused too" } else { "" }
    )]
    Expired { answer: Answer, again: bool },
    #[error("{url}: {}", match refused {
        Redirect::Unreadable => "unreadable redirect".to_owned(),
        Redirect::Scheme(scheme) => format!("refused a redirect to a {scheme} URL"),
        Redirect::Downgrade { scheme, next } => format!("refused a redirect from https to {scheme} ({next})"),
        Redirect::TooMany(n) => format!("more than {n} redirects"),
    })]
    Redirect { url: String, refused: Redirect },
    #[error("{url}: the endpoint did not answer like a Hugging Face Hub (no X-Repo-Commit header)")]
    NotAHub { url: String },
    #[error("{url}: the Hub answered X-Repo-Commit {commit:?}, which is not a 40-hex commit id")]
    BadCommit { url: String, commit: String },
    /// The Hub's etag or size is not the index's: nothing was downloaded.
    #[error(
        "{file}: the Hub's {what} is {hub} but the index says {index}; the index or the upstream file changed, so nothing was downloaded"
    )]
    HubContradicts { file: String, what: &'static str, hub: String, index: String },
    /// A ranged request was answered with 416: the partial file may be past the server's end.
    #[error("{url}: 416 Range Not Satisfiable")]
    RangeNotSatisfiable { url: String },
    /// A ranged request of a parallel download was answered without 206: stream instead.
    #[error("{url}: the server does not honour Range (it answered {status})")]
    NoRanges { url: String, status: StatusCode },
    #[error("{url}: 206 to a request without a range")]
    UnaskedRange { url: String },
    #[error("{url}: wrong Content-Range for bytes {start}-{last} of {size}")]
    WrongContentRange { url: String, start: u64, last: u64, size: u64 },
    #[error("{url}: stalled, no data for {}", humantime::format_duration(*after))]
    Stalled { url: String, after: Duration },
    /// Bytes came, but slower than `min_rate` for a whole `min_rate_window`.
    #[error("{url}: {slow}")]
    TooSlow { url: String, slow: super::pace::TooSlow },
    #[error("{url}: connection broke: {}", describe(source))]
    Broke { url: String, source: reqwest::Error },
    /// `Content-Length` says another size than the index.
    #[error("{url}: the server sends {sends} bytes, the index says {size} (sizeBytes)")]
    WrongLength { url: String, sends: u64, size: u64 },
    #[error("{from}: {}", match part {
        Part::Range { start, end } => format!("more than the {} bytes asked for (bytes {start}-{})", end - start, end - 1),
        Part::File { size } => format!("more than the {size} bytes of the file"),
    })]
    TooLong { from: String, part: Part },
    /// The connection ended early; what came is kept for a resume.
    #[error("{from}: the connection ended after {got} of {}", match part {
        Part::Range { start, end } => format!("the {} bytes {start}-{}", end - start, end - 1),
        Part::File { size } => format!("{size} bytes"),
    })]
    Cut { from: String, got: u64, part: Part },
    /// A file (a `file://` mirror's) ended before the size the index names.
    #[error("{from}: shorter than the {size} bytes of the file ({got} bytes)")]
    Short { from: String, got: u64, size: u64 },
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    #[error("{path}: not in the mirror")]
    NotInMirror { path: String },
    /// A `file://` mirror's file of another size than the index names: refused unread.
    #[error("{path}: {is} bytes, but the file is {size} bytes (sizeBytes)")]
    MirrorSize { path: String, is: u64, size: u64 },
    /// A `file://` mirror's file cannot be read: the next source may do.
    #[error("{path}: {source}")]
    Mirror { path: String, source: io::Error },
    /// The local disk failed while `doing` something (`cannot open /path`, ...).
    #[error("{doing}: {source}{}", if is_disk_full(source) {
        " (the disk is full: free space, then run again; the partial download is kept for resume)"
    } else { "" })]
    Io { doing: String, source: io::Error },
    /// The free-space check before a download.
    #[error(
        "not enough space in {dir}: {} free, {} needed; free space, then run again",
        bytesize::ByteSize(*free).display().iec(),
        bytesize::ByteSize(*need).display().iec()
    )]
    NoSpace { dir: String, free: u64, need: u64 },
    /// A receiver found the writer or hasher stopped; the sink's own error replaces it.
    #[error("cannot write the partial file: {0}")]
    Stopped(#[from] Stopped),
}

/// A full disk (or quota), known by its errno.
fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl Cause {
    /// How the failure is handled.
    pub fn kind(&self) -> Kind {
        match self {
            Cause::NoAnswer { .. }
            | Cause::Transport { .. }
            | Cause::Proxy { .. }
            | Cause::RangeNotSatisfiable { .. }
            | Cause::NoRanges { .. }
            | Cause::UnaskedRange { .. }
            | Cause::Stalled { .. }
            | Cause::TooSlow { .. }
            | Cause::Broke { .. }
            | Cause::Cut { .. } => Kind::Transient,
            Cause::Http { answer, .. } => {
                let status = answer.status;
                if status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
                {
                    Kind::Transient
                } else {
                    Kind::Permanent
                }
            }
            Cause::BadUrl { .. }
            | Cause::Certificate { .. }
            | Cause::Expired { .. }
            | Cause::Redirect { .. }
            | Cause::NotAHub { .. }
            | Cause::BadCommit { .. }
            | Cause::HubContradicts { .. }
            | Cause::NotInMirror { .. }
            | Cause::Mirror { .. } => Kind::Permanent,
            Cause::WrongContentRange { .. }
            | Cause::WrongLength { .. }
            | Cause::MirrorSize { .. }
            | Cause::TooLong { .. }
            | Cause::Short { .. }
            | Cause::Mismatch(_) => Kind::Integrity,
            Cause::Io { .. } | Cause::NoSpace { .. } | Cause::Stopped(_) => Kind::Local,
        }
    }

    /// The few words of the status line.
    pub fn symptom(&self) -> Symptom {
        match self {
            Cause::Mismatch(Mismatch::Sha256 { .. }) => Symptom::ChecksumMismatch,
            Cause::Mismatch(Mismatch::Size { .. })
            | Cause::WrongLength { .. }
            | Cause::MirrorSize { .. }
            | Cause::Short { .. }
            | Cause::TooLong { part: Part::File { .. }, .. } => Symptom::SizeMismatch,
            Cause::TooLong { part: Part::Range { .. }, .. } | Cause::WrongContentRange { .. } => {
                Symptom::WrongBytes
            }
            Cause::HubContradicts { .. } => Symptom::UpstreamChanged,
            Cause::Certificate { .. } => Symptom::UntrustedCertificate,
            Cause::Expired { .. } => Symptom::Denied,
            Cause::NotInMirror { .. } => Symptom::NotFound,
            Cause::Http { answer, .. } if self.kind() == Kind::Permanent => match answer.status {
                StatusCode::NOT_FOUND | StatusCode::GONE => Symptom::NotFound,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Symptom::Denied,
                _ => Symptom::Refused,
            },
            Cause::NoSpace { .. } => Symptom::DiskFull,
            Cause::Io { source, .. } => Symptom::of_io(source),
            _ => match self.kind() {
                Kind::Transient => Symptom::Retrying,
                Kind::Permanent => Symptom::Refused,
                Kind::Integrity => Symptom::WrongBytes,
                Kind::Local => Symptom::DiskError,
            },
        }
    }
}

/// One failed attempt: its cause, and when the retry budget ran out, how much of it was spent.
#[derive(Debug)]
pub struct FetchError {
    /// Boxed: a `Result` with a `FetchError` stays small on the hot paths.
    pub cause: Box<Cause>,
    /// Retries made and the time spent when the retries gave up.
    pub gave_up: Option<(u32, Duration)>,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cause)?;
        if let Some((retries, spent)) = self.gave_up {
            write!(f, " (gave up after {retries} retries in {})", humantime::format_duration(spent))?;
        }
        Ok(())
    }
}

/// The message is the cause's, so the source is the cause's source (an `io::Error`, a
/// `reqwest::Error`), not the cause itself: a chain printed whole says nothing twice.
impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

impl From<Cause> for FetchError {
    fn from(cause: Cause) -> Self {
        Self { cause: Box::new(cause), gave_up: None }
    }
}

impl From<Mismatch> for FetchError {
    fn from(mismatch: Mismatch) -> Self {
        Cause::Mismatch(mismatch).into()
    }
}

impl From<Stopped> for FetchError {
    fn from(stopped: Stopped) -> Self {
        Cause::Stopped(stopped).into()
    }
}

impl FetchError {
    /// A local I/O failure while `doing` something; the error is kept as the source.
    pub fn io(doing: impl Into<String>, source: io::Error) -> Self {
        Cause::Io { doing: doing.into(), source }.into()
    }

    /// A failure of the sink writing the partial file at `path`.
    pub fn sink(path: &std::path::Path, error: SinkError) -> Self {
        Self::io(format!("{} {}", error.doing, path.display()), error.source)
    }

    pub fn kind(&self) -> Kind {
        self.cause.kind()
    }

    /// A short name for the kind, for status lines and journal fields.
    pub fn kind_name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn symptom(&self) -> Symptom {
        self.cause.symptom()
    }

    /// The server's own wait before a retry (`Retry-After`, `RateLimit`).
    pub fn retry_after(&self) -> Option<Duration> {
        match *self.cause {
            Cause::Http { retry_after, .. } => retry_after,
            _ => None,
        }
    }
}

/// What went wrong with a request that got no usable answer, with its causes, without the URL
/// (reqwest's own text includes the URL and so a presigned query string).
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "the response body broke"
    } else {
        "request failed"
    }
    .to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        let status = StatusCode::from_u16(status).unwrap();
        Answer { url: "https://cdn.example/x".into(), status, code: None, message: None }
    }

    #[test]
    fn a_full_disk_is_known_by_its_errno_and_kept_as_the_source() {
        let error = FetchError::io("cannot write /p", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(error.kind(), Kind::Local);
        assert_eq!(error.symptom(), Symptom::DiskFull);
        let source = std::error::Error::source(&error).expect("a source");
        let io = source.downcast_ref::<io::Error>().expect("the io::Error itself");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
        assert!(error.to_string().contains("the disk is full"), "{error}");
        // Text that reads like a full disk is not one: only the errno says so.
        let lookalike = FetchError::io("cannot write /p", io::Error::other("No space left on device"));
        assert_eq!(lookalike.symptom(), Symptom::DiskError);
        assert!(!lookalike.to_string().contains("the disk is full"), "{lookalike}");
    }

    #[test]
    fn a_sink_error_keeps_its_io_error_through_to_the_fetch_error() {
        let sink = SinkError { doing: "cannot write", source: io::Error::from_raw_os_error(libc::EFBIG) };
        let error = FetchError::sink(std::path::Path::new("/cache/p.incomplete"), sink);
        assert_eq!(error.kind(), Kind::Local);
        let io = std::error::Error::source(&error).and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(io.and_then(io::Error::raw_os_error), Some(libc::EFBIG));
        let text = error.to_string();
        assert!(text.starts_with("cannot write /cache/p.incomplete: File too large"), "{text}");
    }

    #[test]
    fn the_kind_and_the_symptom_follow_the_cause() {
        let http = |status| {
            FetchError::from(Cause::Http { answer: answer(status), hint: String::new(), retry_after: None })
        };
        for (status, kind, symptom) in [
            (404, Kind::Permanent, Symptom::NotFound),
            (401, Kind::Permanent, Symptom::Denied),
            (403, Kind::Permanent, Symptom::Denied),
            (400, Kind::Permanent, Symptom::Refused),
            (408, Kind::Transient, Symptom::Retrying),
            (429, Kind::Transient, Symptom::Retrying),
            (503, Kind::Transient, Symptom::Retrying),
        ] {
            assert_eq!((http(status).kind(), http(status).symptom()), (kind, symptom), "{status}");
        }
        let sha = |b: &[u8]| crate::digest::hash_reader(b).unwrap().0;
        let checksum = FetchError::from(Mismatch::Sha256 { expected: sha(b"a"), got: sha(b"b") });
        assert_eq!((checksum.kind(), checksum.symptom()), (Kind::Integrity, Symptom::ChecksumMismatch));
        assert!(checksum.to_string().starts_with("checksum mismatch: expected sha256 "), "{checksum}");
        let size = FetchError::from(Cause::WrongLength { url: "u".into(), sends: 1, size: 2 });
        assert_eq!((size.kind(), size.symptom()), (Kind::Integrity, Symptom::SizeMismatch));
        let changed = FetchError::from(Cause::HubContradicts {
            file: "org/m @ main (m.bin)".into(),
            what: "size",
            hub: "1".into(),
            index: "2".into(),
        });
        assert_eq!((changed.kind(), changed.symptom()), (Kind::Permanent, Symptom::UpstreamChanged));
        let expired = FetchError::from(Cause::Expired { answer: answer(403), again: true });
        assert_eq!(expired.kind(), Kind::Permanent);
        assert!(expired.to_string().ends_with("expired); a fresh URL from the Hub was refused too"));
        let space = FetchError::from(Cause::NoSpace { dir: "/c".into(), free: 1, need: 2 });
        assert_eq!((space.kind(), space.symptom()), (Kind::Local, Symptom::DiskFull));
        let stopped = FetchError::from(Stopped);
        assert_eq!((stopped.kind(), stopped.symptom()), (Kind::Local, Symptom::DiskError));
    }

    #[test]
    fn messages_say_which_bytes() {
        let range = Cause::Cut { from: "u".into(), got: 5, part: Part::Range { start: 10, end: 20 } };
        assert_eq!(range.to_string(), "u: the connection ended after 5 of the 10 bytes 10-19");
        let file = Cause::Cut { from: "u".into(), got: 5, part: Part::File { size: 9 } };
        assert_eq!(file.to_string(), "u: the connection ended after 5 of 9 bytes");
        let long = Cause::TooLong { from: "u".into(), part: Part::Range { start: 0, end: 4 } };
        assert_eq!(long.to_string(), "u: more than the 4 bytes asked for (bytes 0-3)");
        let mut gave_up = FetchError::from(Cause::UnaskedRange { url: "u".into() });
        gave_up.gave_up = Some((3, Duration::from_secs(2)));
        assert_eq!(
            gave_up.to_string(),
            "u: 206 to a request without a range (gave up after 3 retries in 2s)"
        );
    }
}
