//! The properties the fuzz targets check, one function per target, each taking the raw fuzz
//! input and panicking when a property does not hold. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the stable-toolchain replay of the corpus in CI
//! (`tests/it/fuzz_corpus.rs`, which includes this file), so both check the same things.
//!
//! - [`index_text`]: `Index::parse` of any text; an accepted index has only safe paths and
//!   unique, well-formed ids, and resolving and planning it stay inside the cache and the store.
//! - [`index_fields`]: the same checks on a valid index whose names (id, filename, path,
//!   revision, repo, downloadUrl, endpoint) come from the input, so every input gets past the
//!   JSON syntax.
//! - [`config_text`]: `Config::parse`; an accepted config has a clean endpoint, absolute paths
//!   and sane bounds; no error message repeats a password written in a URL.
//! - [`headers`]: `Content-Range` accepted only for the exact range, `Retry-After`,
//!   `RateLimit` and the backoff policy never panic and stay bounded, ETag normalisation.
//! - [`paths`]: a path `unsafe_path_reason` accepts is relative, plain and stays beneath its
//!   base; `redact` leaves no query, fragment or password.

use std::path::{Component, Path};
use std::time::{Duration, UNIX_EPOCH};

use models_fetch::fuzzing::{
    Config, ConfigError, Index, Layout, MAX_DELAY, Policy, Source, content_range_is, content_range_matches,
    normalize_etag, parse_rate_limit, parse_retry_after, plan, redact, unsafe_path_reason,
};
use reqwest::header::HeaderValue;

/// A property check of one target: panics when a property does not hold for the input.
pub type Check = fn(&[u8]);

/// The names of the targets, as in `fuzz/corpus/<target>/`, with their check.
pub const TARGETS: [(&str, Check); 5] = [
    ("index_text", index_text),
    ("index_fields", index_fields),
    ("config_text", config_text),
    ("headers", headers),
    ("paths", paths),
];

const CACHE: &str = "/fuzz/cache";
const STORE: &str = "/fuzz/store";

// ---------------------------------------------------------------------------------------------
// Index, sources and plan.

pub fn index_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(index) = Index::parse(Path::new("index.json"), text) {
        check_index(&index, "https://huggingface.co");
    }
}

/// Input: fields separated by newlines: id, filename, path, revision, repo, downloadUrl,
/// endpoint. An empty optional field is left out of the entry.
pub fn index_fields(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let mut next = || fields.next().unwrap_or_default().to_owned();
    let (id, filename, path, revision, repo, url, endpoint) =
        (next(), next(), next(), next(), next(), next(), next());
    let id = if id.is_empty() { "fuzz-model".to_owned() } else { id };
    let mut artifact = serde_json::json!({
        "filename": if filename.is_empty() { "model.safetensors".to_owned() } else { filename },
        "sha256": "ab".repeat(32),
        "sizeBytes": 12345,
    });
    for (key, value) in [("path", path), ("revision", revision), ("repo", repo), ("downloadUrl", url)] {
        if !value.is_empty() {
            artifact[key] = value.into();
        }
    }
    let index = serde_json::json!({ "models": [{
        "id": id,
        "version": "1.0.0",
        "chakra": "ajna",
        "frequencyHz": 852,
        "geometry": { "pattern": "triangle", "dimensions": 3 },
        "temporalScope": "daily",
        "semanticTags": ["insight"],
        "dataset": { "id": "d", "url": "https://example.org/d" },
        "training": { "repo": "https://example.org/t", "command": "python train.py" },
        "artifact": artifact,
        "license": "Apache-2.0",
        "provenance": { "runId": "run-1" },
    }]});
    let text = serde_json::to_string(&index).expect("serializes");
    if let Ok(index) = Index::parse(Path::new("index.json"), &text) {
        let endpoint = if endpoint.is_empty() { "https://huggingface.co".to_owned() } else { endpoint };
        check_index(&index, &endpoint);
    }
}

/// Every path component after `base` is a plain name.
fn assert_beneath(path: &Path, base: &str, what: &str) {
    let rest = path.strip_prefix(base).unwrap_or_else(|_| panic!("{what} {path:?} is not beneath {base}"));
    assert!(rest.components().count() > 0, "{what} {path:?} is {base} itself");
    for component in rest.components() {
        assert!(matches!(component, Component::Normal(_)), "{what} {path:?} has the component {component:?}");
    }
}

fn assert_safe_relative(value: &str, what: &str) {
    assert_eq!(unsafe_path_reason(value), None, "{what} {value:?} was accepted but is unsafe");
    assert_beneath(&Path::new("/base").join(value), "/base", what);
}

fn is_slug(id: &str) -> bool {
    let bytes = id.as_bytes();
    (2..=64).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// What an accepted index must satisfy, and where planning it puts files. `endpoint` is used
/// as the config's `endpoint` would be: only once the config accepted it.
fn check_index(index: &Index, endpoint: &str) {
    let config = config_with(index, endpoint)
        .or_else(|| config_with(index, "https://huggingface.co"))
        .expect("a config with the default endpoint");
    let endpoint = config.endpoint.as_str();
    let mut ids = std::collections::BTreeSet::new();
    for entry in &index.entries {
        let id = entry.id.as_str();
        assert!(is_slug(id), "id {id:?} accepted");
        assert!(ids.insert(id), "duplicate id {id:?} accepted");
        let artifact = &entry.artifact;
        assert_safe_relative(&artifact.filename, "filename");
        if let Some(path) = &artifact.path {
            assert_safe_relative(path, "path");
        }
        if let Some(revision) = &artifact.revision {
            assert_safe_relative(revision, "revision");
        }
        assert!(
            artifact.sha256.as_str().len() == 64
                && artifact.sha256.as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "sha256 {:?} accepted",
            artifact.sha256.as_str()
        );
        if let Ok(Source::Hub(hub)) = Source::of(entry, endpoint) {
            let repo = Layout::new(&config).hub_repo(&hub);
            assert_eq!(repo.parent(), Some(Path::new(CACHE)), "cache folder {repo:?}");
            let folder = repo.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            assert!(!folder.contains('/') && folder != "." && folder != "..", "cache folder {folder:?}");
            assert_safe_relative(&hub.path, "Hub path");
            assert_safe_relative(&hub.revision, "Hub revision");
            let parts: Vec<&str> = hub.repo.split('/').collect();
            assert!(
                parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."),
                "repo {:?}",
                hub.repo
            );
            check_resolve_url(&hub.resolve_url(), &hub.endpoint, &hub.repo, &hub.revision, &hub.path);
        }
    }
    plan_inside(index, &config);
}

/// The resolve URL stays on the endpoint's origin and reads back as the same file.
fn check_resolve_url(resolve: &str, endpoint: &str, repo: &str, revision: &str, path: &str) {
    let Ok(endpoint_url) = url::Url::parse(endpoint) else { return };
    let url = url::Url::parse(resolve).unwrap_or_else(|e| panic!("resolve URL {resolve:?}: {e}"));
    assert_eq!(url.origin(), endpoint_url.origin(), "resolve URL {resolve:?} left the endpoint {endpoint:?}");
    assert!(
        url.query().is_none() && url.fragment().is_none(),
        "resolve URL {resolve:?} has a query or fragment"
    );
    let tail = resolve
        .strip_prefix(endpoint)
        .unwrap_or_else(|| panic!("{resolve:?} does not start with {endpoint:?}"));
    let tail = tail
        .strip_prefix(&format!("/{repo}/resolve/"))
        .unwrap_or_else(|| panic!("{resolve:?}: no /{repo}/resolve/"));
    let (rev, file) = tail.split_once('/').unwrap_or_else(|| panic!("{resolve:?}: no path"));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    assert_eq!(decode(rev), revision, "the revision of {resolve:?}");
    let segments: Vec<String> = file.split('/').map(decode).collect();
    assert_eq!(segments.join("/"), path, "the path of {resolve:?}");
}

/// TOML basic string for `value`.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config deploying every entry of `index` from `endpoint`, if the config accepts it.
fn config_with(index: &Index, endpoint: &str) -> Option<Config> {
    let ids: Vec<String> = index.entries.iter().map(|e| toml_string(e.id.as_str())).collect();
    let text = format!(
        "index = \"/fuzz/index.json\"\ncache_dir = \"{CACHE}\"\nstore_dir = \"{STORE}\"\nendpoint = {}\ndeployed_models = [{}]\n",
        toml_string(endpoint),
        ids.join(", ")
    );
    Config::parse(Path::new("/fuzz/config.toml"), &text).ok()
}

/// Planning every entry puts its blob, partial file and sidecar in the cache (or the state
/// folder), its snapshot and ref in its repository's folder, and its stable path beneath
/// `{store}/{id}/`, with plain names only.
fn plan_inside(index: &Index, config: &Config) {
    let Ok(plan) = plan(config, index) else { return };
    let layout = Layout::new(config);
    for item in &plan.items {
        let id = item.id.as_str();
        assert_ne!(id, "by-chakra", "a reserved id was planned");
        for file in &item.files {
            let blob = layout.blob(item, file);
            for (path, what) in
                [(layout.partial(item, file), "partial file"), (layout.sidecar(item, file), "sidecar")]
            {
                assert_eq!(path.parent(), blob.parent(), "{what} {path:?} is not beside the blob {blob:?}");
            }
            match &item.source {
                Source::Hub(hub) => {
                    let repo = layout.hub_repo(hub);
                    assert_beneath(&blob, CACHE, "blob path");
                    assert_eq!(blob, repo.join("blobs").join(file.sha256.as_str()), "blob path");
                    let snapshot = layout.snapshot(hub, "0123456789abcdef0123456789abcdef01234567", file);
                    assert_beneath(&snapshot, &repo.join("snapshots").to_string_lossy(), "snapshot path");
                    let reference = layout.reference(item).expect("a Hub model has a ref");
                    assert_beneath(&reference, &repo.join("refs").to_string_lossy(), "ref");
                }
                Source::Url(url) => {
                    assert_beneath(&blob, &format!("{STORE}/.models-fetch/blobs"), "blob path");
                    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("planned URL {url:?}: {e}"));
                    assert!(matches!(parsed.scheme(), "http" | "https"), "planned URL {url:?}");
                }
            }
            assert_beneath(&layout.store_file(item, file), &format!("{STORE}/{id}"), "store path");
            assert_beneath(
                &Layout::tree_file(&layout.tree(item), file),
                &format!("{STORE}/.models-fetch/trees/{id}"),
                "tree path",
            );
        }
        assert_beneath(&layout.store_path(item), &format!("{STORE}/{id}"), "store path");
    }
}

// ---------------------------------------------------------------------------------------------
// Config.

pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(Path::new("/etc/models-fetch/config.toml"), text) {
        Ok(config) => {
            let endpoint = url::Url::parse(&config.endpoint)
                .unwrap_or_else(|e| panic!("endpoint {:?} accepted: {e}", config.endpoint));
            assert!(matches!(endpoint.scheme(), "http" | "https"), "endpoint {:?}", config.endpoint);
            assert!(
                endpoint.username().is_empty() && endpoint.password().is_none(),
                "endpoint with credentials"
            );
            assert!(
                endpoint.query().is_none() && endpoint.fragment().is_none(),
                "endpoint {:?}",
                config.endpoint
            );
            assert!(!config.endpoint.ends_with('/'), "endpoint {:?} ends with /", config.endpoint);
            for path in [&config.index, &config.cache_dir, &config.store_dir] {
                assert!(path.is_absolute(), "{path:?} is not absolute");
            }
            for path in [&config.token_file, &config.ca_file, &config.metrics_file].into_iter().flatten() {
                assert!(path.is_absolute(), "{path:?} is not absolute");
            }
            for mirror in &config.mirrors {
                if !mirror.starts_with("file://") {
                    let url = url::Url::parse(mirror).unwrap_or_else(|e| panic!("mirror {mirror:?}: {e}"));
                    assert!(url.username().is_empty() && url.password().is_none(), "mirror with credentials");
                }
            }
            if let Some(proxy) = &config.proxy {
                let url = url::Url::parse(proxy).unwrap_or_else(|e| panic!("proxy {proxy:?}: {e}"));
                assert!(url.username().is_empty() && url.password().is_none(), "proxy with credentials");
            }
            assert!(config.max_parallel_models >= 1 && config.connections_per_file >= 1);
            assert!(config.max_connections_per_host >= 1);
            assert!(config.chunk_size.as_u64() >= 64 << 10, "chunk_size {}", config.chunk_size);
            assert!(!config.stall_timeout.is_zero() && !config.connect_timeout.is_zero());
            assert!(config.recheck_interval >= Duration::from_secs(1));
        }
        // The project's own messages (a TOML syntax error quotes the line, as toml prints it).
        Err(error @ ConfigError::Invalid { .. }) => {
            let message = error.to_string();
            for userinfo in userinfos(text, usize::MAX) {
                assert!(
                    !message.contains(&format!("://{userinfo}@")),
                    "the error repeats the credentials {userinfo:?} of a URL: {message}"
                );
            }
        }
        Err(_) => {}
    }
}

/// The `user:password` of the `scheme://user:password@host` forms among the first `n` `://`
/// of `text` (passwords of at least 4 characters).
fn userinfos(text: &str, n: usize) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("://").take(n) {
        let rest = &text[at + 3..];
        let authority = rest.split(['/', '?', '#', '"', '\'', '\n', ' ']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.split_once(':').is_some_and(|(_, password)| password.len() >= 4)
        {
            found.push(userinfo.to_owned());
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Headers.

/// `bytes first-last/total` read with the same number syntax as the code under test
/// (surrounding spaces, `u64` digits), independently of it.
fn content_range_numbers(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let total = if total.trim() == "*" { None } else { Some(number(total)?) };
    Some((number(first)?, number(last)?, total))
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, b) in data.iter().skip(at).take(8).enumerate() {
        bytes[i] = *b;
    }
    u64::from_le_bytes(bytes)
}

/// Input: 24 bytes of numbers (from, size, clock), then header values separated by newlines.
pub fn headers(data: &[u8]) {
    let (a, b, clock) = (u64_at(data, 0), u64_at(data, 8), u64_at(data, 16));
    let rest = data.get(24..).unwrap_or_default();
    // Small numbers often, so they meet the numbers in the text.
    let small = |n: u64| if n & 1 == 0 { (n >> 1) % 4096 } else { n >> 1 };
    let (size, from) = (small(b), small(a));
    let now = UNIX_EPOCH + Duration::from_secs(clock % (400 * 365 * 86400));
    for line in rest.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);

        if let Ok(value) = HeaderValue::from_bytes(line) {
            // The caller resumes only from inside the file.
            if from < size && content_range_matches(Some(&value), from, size) {
                let numbers = content_range_numbers(value.to_str().expect("a matching value is text"));
                assert!(
                    matches!(numbers, Some((f, l, t)) if f == from && l == size - 1 && t.is_none_or(|t| t == size)),
                    "Content-Range {value:?} accepted for a resume from {from} of {size}"
                );
            }
            let (start, end) = (from.min(size), size.saturating_sub(1).max(from.min(size)));
            if content_range_is(Some(&value), start, end, size.max(1)) {
                let numbers = content_range_numbers(value.to_str().expect("a matching value is text"));
                assert!(
                    matches!(numbers, Some((f, l, t)) if f == start && l == end && t.is_none_or(|t| t == size.max(1))),
                    "Content-Range {value:?} accepted for bytes {start}-{end}/{}",
                    size.max(1)
                );
            }
            assert!(!content_range_matches(Some(&value), from, 0), "a range of an empty file accepted");
        }
        assert!(!content_range_matches(None, from, size), "no Content-Range accepted");

        let hint = parse_retry_after(&text, now);
        if let Some(hint) = hint {
            let trimmed = text.trim();
            if let Ok(seconds) = trimmed.parse::<u64>() {
                assert_eq!(hint, Duration::from_secs(seconds), "Retry-After {trimmed:?}");
            } else {
                let when = httpdate::parse_http_date(trimmed).unwrap_or_else(|_| {
                    panic!("Retry-After {trimmed:?} read as {hint:?} but is neither form")
                });
                assert_eq!(hint, when.duration_since(now).unwrap_or_default(), "Retry-After {trimmed:?}");
            }
        }
        let rate = parse_rate_limit(&text);
        if let Some(rate) = rate {
            let found = text.split([';', ',']).any(|part| {
                part.trim().split_once('=').is_some_and(|(k, v)| {
                    k.trim() == "t" && v.trim().parse::<u64>().is_ok_and(|t| t == rate.as_secs())
                })
            });
            assert!(found, "RateLimit {text:?} read as {rate:?}");
        }
        let policy = Policy {
            max_retries: (clock % 50) as u32,
            base_delay: Duration::from_millis(a % 100_000),
            max_time: Duration::from_secs(b % 100_000),
        };
        let elapsed = Duration::from_millis(clock % 10_000_000);
        let jitter = (a % 1000) as f64 / 1000.0;
        for retry in [0, 1, 7, 31, 64, u32::MAX] {
            if let Some(delay) = policy.delay(retry, elapsed, hint.or(rate), jitter) {
                assert!(delay <= MAX_DELAY, "a delay of {delay:?}");
                assert!(elapsed + delay <= policy.max_time, "past the retry budget");
                assert!(retry < policy.max_retries, "a retry past max_retries");
            }
        }

        let etag = normalize_etag(&text);
        assert!(text.contains(etag.as_str()), "ETag {text:?} normalized to {etag:?}, not a part of it");
        assert!(!etag.starts_with('"') && !etag.ends_with('"'), "ETag {text:?} normalized to {etag:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and redaction.

pub fn paths(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for candidate in [text.as_ref(), text.lines().next().unwrap_or_default()] {
        match unsafe_path_reason(candidate) {
            None => {
                assert!(!candidate.is_empty() && !candidate.starts_with('/'), "{candidate:?} accepted");
                assert!(candidate.len() <= 4096, "a path of {} bytes accepted", candidate.len());
                assert!(
                    !candidate.chars().any(|c| c == '\0' || c == '\\' || c.is_control()),
                    "{candidate:?} accepted"
                );
                for segment in candidate.split('/') {
                    assert!(
                        !matches!(segment, "" | "." | ".."),
                        "{candidate:?} accepted with segment {segment:?}"
                    );
                    assert!(segment.len() <= 255, "a segment of {} bytes accepted", segment.len());
                }
                assert_beneath(&Path::new("/base").join(candidate), "/base", "path");
            }
            Some(reason) => assert!(!reason.is_empty()),
        }
        check_redact(candidate);
    }
}

fn check_redact(input: &str) {
    let out = redact(input);
    assert!(!out.contains('#'), "redact({input:?}) = {out:?} keeps a fragment");
    if let Some((_, query)) = out.split_once('?') {
        assert_eq!(query, "<redacted>", "redact({input:?}) = {out:?} keeps a query");
    }
    if let Ok(url) = url::Url::parse(input) {
        // A URL: what comes out is the same URL without credentials.
        let redacted = url::Url::parse(&out).unwrap_or_else(|e| panic!("redact({input:?}) = {out:?}: {e}"));
        assert!(
            redacted.username().is_empty() && redacted.password().is_none(),
            "redact({input:?}) = {out:?} keeps credentials"
        );
        if url.query().is_some() {
            assert!(out.ends_with("?<redacted>"), "redact({input:?}) = {out:?}");
        }
    } else {
        // Not a URL: no `user:password@` where the authority of the first `scheme://` would be.
        let kept = userinfos(&out, 1);
        assert!(kept.is_empty(), "redact({input:?}) = {out:?} keeps the credentials {kept:?}");
    }
}
