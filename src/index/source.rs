//! Where an entry's file comes from: a Hugging Face Hub file (`repo`/`revision`/`path`, or a
//! `downloadUrl` of the Hub's resolve form) or a plain URL.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

use super::{Entry, unsafe_path_reason};

/// The public Hub. A `downloadUrl` on this endpoint follows the configured endpoint, the way
/// `HF_ENDPOINT` redirects the Python client, so one index serves hosts behind a private Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Characters left as they are in a path segment of a resolve URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A file in a Hub repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Endpoint URL without a trailing slash, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// `org/name`.
    pub repo: String,
    pub revision: String,
    /// Path of the file inside the repository.
    pub path: String,
}

impl HubFile {
    /// `{endpoint}/{repo}/resolve/{revision}/{path}`, the revision percent-encoded as one segment.
    pub fn resolve_url(&self) -> String {
        let path: Vec<String> =
            self.path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            self.repo,
            utf8_percent_encode(&self.revision, SEGMENT),
            path.join("/")
        )
    }
}

/// The source of one entry's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Hub(HubFile),
    Url(String),
}

impl Source {
    /// The URL the first request goes to.
    pub fn url(&self) -> String {
        match self {
            Source::Hub(hub) => hub.resolve_url(),
            Source::Url(url) => url.clone(),
        }
    }

    /// Reads the source of `entry`; `endpoint` is the configured Hub endpoint.
    pub fn of(entry: &Entry, endpoint: &str) -> Result<Self, SourceError> {
        let artifact = &entry.artifact;
        let endpoint = endpoint.trim_end_matches('/');
        if let Some(repo) = &artifact.repo {
            let hub = HubFile {
                endpoint: endpoint.to_owned(),
                repo: repo.clone(),
                revision: artifact.revision.clone().unwrap_or_else(|| "main".to_owned()),
                path: artifact.path.clone().unwrap_or_else(|| artifact.filename.clone()),
            };
            return Ok(Source::Hub(hub));
        }
        let Some(url) = &artifact.download_url else {
            return Err(SourceError::None);
        };
        let parsed = Url::parse(url).map_err(|e| SourceError::BadUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SourceError::BadUrl(format!("scheme {:?} is not http or https", parsed.scheme())));
        }
        Ok(match hub_of_url(&parsed)? {
            Some(mut hub) => {
                if hub.endpoint == DEFAULT_ENDPOINT {
                    endpoint.clone_into(&mut hub.endpoint);
                }
                Source::Hub(hub)
            }
            None => Source::Url(url.clone()),
        })
    }
}

/// Reads `{endpoint}/{org}/{name}/resolve/{revision}/{path...}`; `None` for any other URL.
fn hub_of_url(url: &Url) -> Result<Option<HubFile>, SourceError> {
    if url.query().is_some() || url.fragment().is_some() {
        return Ok(None);
    }
    let segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
    let Some(at) = segments.iter().rposition(|s| *s == "resolve") else {
        return Ok(None);
    };
    if at < 2 || segments.len() < at + 3 {
        return Ok(None);
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
    let bad = |e: std::str::Utf8Error| SourceError::BadUrl(e.to_string());
    let revision = decode(segments[at + 1]).map_err(bad)?;
    let path =
        segments[at + 2..].iter().map(|s| decode(s)).collect::<Result<Vec<_>, _>>().map_err(bad)?.join("/");
    for (what, value) in [("revision", &revision), ("path", &path)] {
        if let Some(reason) = unsafe_path_reason(value) {
            return Err(SourceError::BadUrl(format!("its {what} {value:?} {reason}")));
        }
    }
    let mut endpoint = url.origin().ascii_serialization();
    for prefix in &segments[..at - 2] {
        endpoint.push('/');
        endpoint.push_str(prefix);
    }
    Ok(Some(HubFile { endpoint, repo: format!("{}/{}", segments[at - 2], segments[at - 1]), revision, path }))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("it has no source: add artifact.repo (a Hub repository \"org/name\") or artifact.downloadUrl")]
    None,
    #[error("its artifact.downloadUrl cannot be used: {0}")]
    BadUrl(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Hub(hub) => write!(f, "hub {} @ {}: {}", hub.repo, hub.revision, hub.path),
            Source::Url(url) => write!(f, "url {url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Option<HubFile> {
        hub_of_url(&Url::parse(s).unwrap()).unwrap()
    }

    #[test]
    fn resolve_urls_are_read_as_hub_files() {
        let hub = url("https://huggingface.co/org/name/resolve/main/sub/model.gguf").unwrap();
        assert_eq!(hub.endpoint, "https://huggingface.co");
        assert_eq!(hub.repo, "org/name");
        assert_eq!(hub.revision, "main");
        assert_eq!(hub.path, "sub/model.gguf");
        assert_eq!(hub.resolve_url(), "https://huggingface.co/org/name/resolve/main/sub/model.gguf");

        let hub = url("http://127.0.0.1:8080/hub/org/name/resolve/refs%2Fpr%2F1/a%20b.bin").unwrap();
        assert_eq!(hub.endpoint, "http://127.0.0.1:8080/hub");
        assert_eq!(hub.revision, "refs/pr/1");
        assert_eq!(hub.path, "a b.bin");
        assert_eq!(hub.resolve_url(), "http://127.0.0.1:8080/hub/org/name/resolve/refs%2Fpr%2F1/a%20b.bin");
    }

    #[test]
    fn other_urls_stay_plain() {
        assert_eq!(url("https://example.org/files/model.bin"), None);
        assert_eq!(url("https://example.org/resolve/main/x"), None);
        assert_eq!(url("https://cdn.example.org/org/name/resolve/main/x?sig=1"), None);
    }

    #[test]
    fn escaping_paths_in_urls_are_refused() {
        let err =
            hub_of_url(&Url::parse("https://h.example/o/n/resolve/main/a%2F..%2Fx").unwrap()).unwrap_err();
        assert!(err.to_string().contains("\"..\" segment"), "{err}");
    }
}
