//! What went wrong with one attempt to fetch a file, and what that means for retrying.

use std::time::Duration;

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

/// One failed attempt. The message never holds a token or a presigned query string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub kind: Kind,
    pub message: String,
    /// The server's own wait before a retry (`Retry-After`, `RateLimit`).
    pub retry_after: Option<Duration>,
    /// A CDN refused a presigned URL: resolve again from the Hub.
    pub expired: bool,
    /// A ranged request was answered with 416: the partial file may already be complete.
    pub range_not_satisfiable: bool,
}

impl FetchError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            expired: false,
            range_not_satisfiable: false,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(Kind::Transient, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(Kind::Permanent, message)
    }

    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(Kind::Integrity, message)
    }

    /// A local I/O failure while `doing` something.
    pub fn local(doing: &str, error: &std::io::Error) -> Self {
        let hint = if error.raw_os_error() == Some(libc::ENOSPC) {
            " (the disk is full: free space, then run again; the partial download is kept for resume)"
        } else {
            ""
        };
        Self::new(Kind::Local, format!("{doing}: {error}{hint}"))
    }

    /// A short name for the kind, for status lines and journal fields.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}
