//! A client of the Hub's API for pinning, against any endpoint that speaks it (huggingface.co,
//! a private Hub, a mirror): the commit a revision points at, every file of a commit (the tree
//! endpoint, page after page), and the bytes of a small file at a commit.
//!
//! Like `fetch::http` (whose settings it takes: proxy, ca_file, timeouts), it follows redirects
//! by hand so that the token goes only to the endpoint's own origin and an https -> http
//! downgrade is refused, and it never puts a token or a query string in an error.

pub(crate) mod tree;

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};
use sha2::Digest;
use url::Url;

use crate::fetch::error::describe;
use crate::secret::{Token, redact};
pub(crate) use tree::{Content, TreeFile};

/// Redirects followed for one request before giving up.
const MAX_REDIRECTS: usize = 8;
/// The most a JSON answer (a tree page, a model info) may hold.
const MAX_JSON: usize = 64 << 20;
/// The most pages one tree listing may have (the Hub's hold 1000 entries each).
const MAX_PAGES: usize = 100_000;

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where the client connects and how.
pub(crate) struct Settings {
    /// The endpoint, an http(s) URL without credentials, query or fragment.
    pub(crate) endpoint: String,
    /// The token and where it came from (`--token-file F`, `HF_TOKEN`, ...), for error hints.
    pub(crate) token: Option<(Token, String)>,
    pub(crate) proxy: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
}

/// A request that failed: for good (a refusal, an answer unlike the Hub's), or for now (the
/// network, the Hub's 5xx and 429).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

pub(crate) struct Hub {
    client: reqwest::Client,
    endpoint: Url,
    token: Option<(Token, String)>,
    stall_timeout: Duration,
}

/// A small file as downloaded: its sha256, size and git blob id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Downloaded {
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) git_oid: String,
}

impl Hub {
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        let endpoint = Url::parse(settings.endpoint.trim_end_matches('/'))
            .map_err(|e| format!("endpoint {:?}: {e}", redact(&settings.endpoint)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(format!("endpoint {}: not an http or https URL", redact(endpoint.as_str())));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(
                "the endpoint URL holds credentials; pass the token with --token-file or HF_TOKEN".into()
            );
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(format!("endpoint {}: must not have a query or fragment", redact(endpoint.as_str())));
        }
        let client = crate::fetch::http::client(&crate::fetch::http::Net {
            ca_file: settings.ca_file.as_deref(),
            proxy: settings.proxy.as_deref(),
            connect_timeout: settings.connect_timeout,
            stall_timeout: settings.stall_timeout,
        })?;
        Ok(Self { client, endpoint, token: settings.token, stall_timeout: settings.stall_timeout })
    }

    fn api_url(&self, repo: &str, tail: &str) -> String {
        format!("{}/api/models/{}/{tail}", self.endpoint.as_str().trim_end_matches('/'), encode_repo(repo))
    }

    /// The 40-hex commit `revision` (a branch, tag or commit) of `repo` points at now.
    pub(crate) async fn commit(&self, repo: &str, revision: &str) -> Result<String, HubError> {
        let url = self.api_url(repo, &format!("revision/{}", utf8_percent_encode(revision, SEGMENT)));
        let (at, _, info) = self.get_json(&url).await?;
        tree::commit_of(&info).map_err(|e| HubError::Permanent(format!("{}: {e}", redact(at.as_str()))))
    }

    /// Every file of `repo` at `commit`, from the tree endpoint, page after page. Each page must
    /// stay at `commit` (its next page under the same path), and no path may come twice: a
    /// listing that moves is refused, never mixed.
    pub(crate) async fn tree(&self, repo: &str, commit: &str) -> Result<Vec<TreeFile>, HubError> {
        let first = self.api_url(repo, &format!("tree/{commit}?recursive=true"));
        let first_path = Url::parse(&first).expect("built from a valid endpoint").path().to_owned();
        let mut url = first;
        let mut files: Vec<TreeFile> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut visited = std::collections::BTreeSet::new();
        for page in 1..=MAX_PAGES {
            let (at, headers, json) = self.get_json(&url).await?;
            let here = redact(at.as_str());
            let moved = |why: String| {
                HubError::Permanent(format!(
                    "{here}: the tree of {commit} changed between pages: {why}; nothing was pinned, try again"
                ))
            };
            if let Some(listed) = header_text(&headers, "x-repo-commit")
                && !listed.eq_ignore_ascii_case(commit)
            {
                return Err(moved(format!("page {page} is of commit {listed}")));
            }
            let entries = tree::parse_page(&json).map_err(|e| HubError::Permanent(format!("{here}: {e}")))?;
            for file in entries {
                if !seen.insert(file.path.clone()) {
                    return Err(moved(format!("page {page} lists {:?} again", file.path)));
                }
                files.push(file);
            }
            let Some(next) = headers
                .get_all(header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(tree::next_link)
            else {
                return Ok(files);
            };
            let next = at
                .join(next)
                .map_err(|e| HubError::Permanent(format!("{here}: unreadable next-page link: {e}")))?;
            if next.origin() != self.endpoint.origin() {
                return Err(HubError::Permanent(format!(
                    "{here}: the next page of the tree is on another origin ({}); refused",
                    redact(next.as_str())
                )));
            }
            if next.path() != first_path {
                return Err(moved(format!(
                    "the next page ({}) does not list commit {commit}",
                    redact(next.as_str())
                )));
            }
            if !visited.insert(next.to_string()) {
                return Err(HubError::Permanent(format!("{here}: the tree's pages loop")));
            }
            url = next.to_string();
        }
        Err(HubError::Permanent(format!("the tree of {repo} at {commit} has more than {MAX_PAGES} pages")))
    }

    /// Downloads the small (git) file `path` of `repo` at `commit`, which the tree lists with
    /// `size` bytes: its sha256, size and git blob id (`sha1("blob <size>\0" + content)`).
    /// More bytes than `size` are not read.
    pub(crate) async fn download(
        &self,
        repo: &str,
        commit: &str,
        path: &str,
        size: u64,
    ) -> Result<Downloaded, HubError> {
        let encoded: Vec<String> =
            path.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect();
        let url = format!(
            "{}/{}/resolve/{commit}/{}",
            self.endpoint.as_str().trim_end_matches('/'),
            encode_repo(repo),
            encoded.join("/")
        );
        let (at, mut response) = self.get(&url).await?;
        let here = redact(at.as_str());
        let mut sha256 = sha2::Sha256::new();
        let mut sha1 = sha1::Sha1::new();
        sha1.update(format!("blob {size}\0").as_bytes());
        let mut read = 0u64;
        loop {
            let Some(chunk) = self.next_chunk(&mut response, &here).await? else { break };
            read += chunk.len() as u64;
            if read > size {
                return Err(HubError::Permanent(format!(
                    "{here}: the Hub serves more than the {size} bytes its tree lists for {path:?}"
                )));
            }
            sha256.update(&chunk);
            sha1.update(&chunk);
        }
        if read != size {
            return Err(HubError::Permanent(format!(
                "{here}: the Hub served {read} bytes of {path:?}, its tree lists {size}"
            )));
        }
        Ok(Downloaded {
            sha256: crate::digest::Sha256Hex::from_hasher(sha256).as_str().to_owned(),
            size,
            git_oid: hex(&sha1.finalize()),
        })
    }

    /// The next piece of a body; no byte for `stall_timeout` is a transient error.
    async fn next_chunk(
        &self,
        response: &mut Response,
        here: &str,
    ) -> Result<Option<bytes::Bytes>, HubError> {
        tokio::time::timeout(self.stall_timeout, response.chunk())
            .await
            .map_err(|_| HubError::Transient(format!("{here}: stalled")))?
            .map_err(|e| HubError::Transient(format!("{here}: {}", describe(&e))))
    }

    /// `GET` of a JSON answer: where it was answered from, its headers and the JSON.
    async fn get_json(&self, url: &str) -> Result<(Url, HeaderMap, serde_json::Value), HubError> {
        let (at, mut response) = self.get(url).await?;
        let here = redact(at.as_str());
        if response.content_length().is_some_and(|n| n > MAX_JSON as u64) {
            return Err(HubError::Permanent(format!(
                "{here}: the answer is larger than {} MiB",
                MAX_JSON >> 20
            )));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        loop {
            let Some(chunk) = self.next_chunk(&mut response, &here).await? else { break };
            if body.len() + chunk.len() > MAX_JSON {
                return Err(HubError::Permanent(format!(
                    "{here}: the answer is larger than {} MiB",
                    MAX_JSON >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let json = serde_json::from_slice(&body).map_err(|e| {
            HubError::Permanent(format!(
                "{here}: the endpoint did not answer like a Hugging Face Hub (not JSON: {e})"
            ))
        })?;
        Ok((at, headers, json))
    }

    /// `GET`, redirects followed by hand (the token only to the endpoint's origin), until a
    /// success; any other answer is an error that says why.
    async fn get(&self, start: &str) -> Result<(Url, Response), HubError> {
        let mut url = Url::parse(start)
            .map_err(|e| HubError::Permanent(format!("{}: not a URL: {e}", redact(start))))?;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.client.get(url.clone()).header(header::ACCEPT_ENCODING, "identity");
            if let Some((token, _)) = &self.token
                && url.origin() == self.endpoint.origin()
            {
                request = request.header(header::AUTHORIZATION, token.header_value());
            }
            let response = tokio::time::timeout(self.stall_timeout, request.send())
                .await
                .map_err(|_| {
                    HubError::Transient(format!(
                        "{}: no answer within {}",
                        redact(url.as_str()),
                        humantime::format_duration(self.stall_timeout)
                    ))
                })?
                .map_err(|e| transport_error(&url, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok((url, response));
            }
            if !status.is_redirection() {
                return Err(self.status_error(&url, &response));
            }
            let next = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    HubError::Permanent(format!(
                        "{}: {status} without a usable Location",
                        redact(url.as_str())
                    ))
                })?;
            if !matches!(next.scheme(), "http" | "https")
                || (url.scheme() == "https" && next.scheme() != "https")
            {
                return Err(HubError::Permanent(format!(
                    "{}: refused a redirect to {}",
                    redact(url.as_str()),
                    redact(next.as_str())
                )));
            }
            url = next;
        }
        Err(HubError::Permanent(format!("{}: more than {MAX_REDIRECTS} redirects", redact(start))))
    }

    /// An answer that is neither a success nor a redirect, with the Hub's `X-Error-Code` and
    /// message, and for 401/403 what to do about the token.
    fn status_error(&self, url: &Url, response: &Response) -> HubError {
        let status = response.status();
        let headers = response.headers();
        let code = header_text(headers, "x-error-code");
        let mut text = format!("{}: {status}", redact(url.as_str()));
        if let Some(code) = code {
            text.push_str(&format!(" ({code})"));
        }
        if let Some(message) = header_text(headers, "x-error-message") {
            text.push_str(&format!(": {message}"));
        }
        let own_origin = url.origin() == self.endpoint.origin();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && own_origin {
            let gated = code == Some("GatedRepo");
            text.push_str(&match (&self.token, gated) {
                (None, true) => "; the repository is gated: accept its conditions on the Hub, then pass a token (--token-file, the config's token_file or HF_TOKEN)".to_owned(),
                (None, false) => "; the repository may be private or gated, or may not exist: pass a token (--token-file, the config's token_file or HF_TOKEN)".to_owned(),
                (Some((_, from)), true) => format!("; the token from {from} was refused: the repository is gated and its user has not been granted access"),
                (Some((_, from)), false) => format!("; the token from {from} was refused or may not read this repository"),
            });
        }
        let transient = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        if transient { HubError::Transient(text) } else { HubError::Permanent(text) }
    }
}

/// `org/name` with each part percent-encoded.
fn encode_repo(repo: &str) -> String {
    repo.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn transport_error(url: &Url, error: &reqwest::Error) -> HubError {
    let text = describe(error);
    let message = format!("{}: {text}", redact(url.as_str()));
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        return HubError::Permanent(format!("{message} (set ca_file in the config to trust a private CA)"));
    }
    HubError::Transient(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_revision_are_encoded_as_segments() {
        assert_eq!(encode_repo("org/name.v1"), "org/name.v1");
        assert_eq!(utf8_percent_encode("refs/pr/1", SEGMENT).to_string(), "refs%2Fpr%2F1");
    }
}
