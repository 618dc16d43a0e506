//! The daemon's configuration file: TOML, or JSON when its name ends in `.json` (the NixOS
//! module renders it with `builtins.toJSON`). Both have the same keys and the same values
//! (durations and sizes are strings in both).
//!
//! Parsing is strict: an unknown key is an error naming the key, and so is a value of the wrong
//! type. Relative paths are taken relative to the directory of the config file, so a config and
//! its index can travel together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::index::source::DEFAULT_ENDPOINT;

/// Where the config is looked for without `--config` (or `MODELS_FETCH_CONFIG`): the first that
/// exists, else the first. Hosts without NixOS write the TOML one (packaging/); the NixOS module
/// installs the JSON one.
pub const DEFAULT_PATHS: [&str; 2] = ["/etc/models-fetch/config.toml", "/etc/models-fetch/config.json"];

/// The config file to read when none is named: the first of [`DEFAULT_PATHS`] that exists.
pub fn default_path() -> PathBuf {
    first_existing(&DEFAULT_PATHS.map(Path::new))
}

fn first_existing(candidates: &[&Path]) -> PathBuf {
    candidates.iter().find(|p| p.exists()).unwrap_or(&candidates[0]).to_path_buf()
}

/// The syntax of a config file, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

impl Format {
    fn of(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

/// The configuration, with paths made absolute (or relative to the working directory when the
/// config file's own path was).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model index (`index.json`).
    pub index: PathBuf,
    /// The Hugging Face cache (`HF_HUB_CACHE` layout) the files are downloaded into.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Stable per-model paths: `<store_dir>/<model id>/<filename>`.
    #[serde(default = "default_store_dir")]
    pub store_dir: PathBuf,
    /// A file holding the Hub token; never the token itself.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Hub endpoint.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Hash files already at a blob's name that this program did not verify before using them.
    /// `false` trusts them by size (with a warning). Downloads are verified either way.
    #[serde(default = "yes")]
    pub verify_checksums: bool,
    /// Model ids to deploy.
    #[serde(default)]
    pub deployed_models: Vec<String>,
    /// Model ids to deploy, grouped by chakra; each must be listed under its own chakra.
    #[serde(default)]
    pub chakra_models: BTreeMap<String, Vec<String>>,
    /// Content-addressed mirrors tried after the Hub and `downloadUrl`, as the file names them:
    /// a base URL (`https://...`, `http://...`, `file:///...`) or a table with credentials.
    #[serde(default, rename = "mirrors")]
    mirror_entries: Vec<MirrorEntry>,
    /// The mirrors' base URLs (`http(s)://...` or local directories `file:///...`), in order; a
    /// file is looked up as `{base}/{sha256}` and trusted only through its hash.
    #[serde(skip)]
    pub mirrors: Vec<String>,
    /// The credentials of the mirrors that have some: where to read them and how to send them.
    #[serde(skip)]
    pub mirror_credentials: Vec<MirrorCredentials>,
    /// Try the mirrors before the Hub and `downloadUrl` (for air-gapped hosts and fleets
    /// whose mirror is close).
    #[serde(default)]
    pub mirrors_first: bool,
    /// HTTP(S) proxy for every request (`NO_PROXY` still applies); without it, the usual
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` variables are honoured.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long a TCP+TLS connection may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A transfer that receives no byte for this long is abandoned and retried.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// A transfer slower than this (bytes per second) for all of `min_rate_window` is treated
    /// as a stall and retried (resume keeps the bytes): an origin that drips a few bytes just
    /// often enough to beat `stall_timeout` is abandoned. `0` turns the guard off.
    #[serde(default = "default_min_rate")]
    pub min_rate: bytesize::ByteSize,
    /// The window `min_rate` is measured over.
    #[serde(default = "default_min_rate_window", with = "humantime_serde")]
    pub min_rate_window: Duration,
    /// Retries of a transient failure, per source.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay; doubled each retry (with jitter), capped at 60 s.
    #[serde(default = "default_retry_base_delay", with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Total time a source may spend retrying before the next source is tried.
    #[serde(default = "default_retry_max_time", with = "humantime_serde")]
    pub retry_max_time: Duration,
    /// How many models are fetched at the same time.
    #[serde(default = "default_max_parallel_models")]
    pub max_parallel_models: usize,
    /// Files of one model downloaded at the same time (smallest first); the model holds one
    /// of the `max_parallel_models` slots while any of them is transferring.
    #[serde(default = "default_max_parallel_files")]
    pub max_parallel_files: usize,
    /// Connections used for one large file (parallel ranged requests, 32 MiB chunks); 1 streams
    /// every file over one connection.
    #[serde(default = "default_connections_per_file")]
    pub connections_per_file: usize,
    /// Chunk size of a parallel download (`32MiB`); files under two chunks use one connection.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: bytesize::ByteSize,
    /// Requests in flight to one host at most, over all files (the Hub throttles above ~8).
    #[serde(default = "default_max_connections_per_host")]
    pub max_connections_per_host: usize,
    /// `run`: how often every model is checked again (stamps, links; failed models retried).
    #[serde(default = "default_recheck_interval", with = "humantime_serde")]
    pub recheck_interval: Duration,
    /// `run`: how often published files are hashed again; off unless set. Ignored with
    /// `verify_checksums = false`.
    #[serde(default, with = "humantime_serde")]
    pub rehash_interval: Option<Duration>,
    /// `run`: a Prometheus textfile (node_exporter's textfile collector) kept current with
    /// per-model state and bytes.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Versions kept per model besides the published one (an update's old version, a removed
    /// model's last one), so a rollback publishes from disk; `0` keeps none.
    #[serde(default = "default_keep_previous")]
    pub keep_previous: usize,
    /// Remove what is no longer deployed nor kept (after every pass, and to make room before
    /// a download is refused for lack of space); `false` removes nothing automatically
    /// (`models-fetch gc` still does).
    #[serde(default = "yes")]
    pub prune: bool,
}

/// One `mirrors` entry: `"https://..."`, or `{ url = "...", credentials_file = "...", auth =
/// "bearer" }` for a mirror that needs credentials (`credential = "name"` instead of
/// `credentials_file` reads `$CREDENTIALS_DIRECTORY/name`, as the NixOS module passes them).
#[derive(Debug, Clone, PartialEq, Eq)]
enum MirrorEntry {
    Url(String),
    Table(MirrorTable),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorTable {
    url: String,
    #[serde(default)]
    credentials_file: Option<PathBuf>,
    #[serde(default)]
    credential: Option<String>,
    #[serde(default)]
    auth: MirrorAuth,
}

/// A string or a table; a table's errors name its keys (an untagged enum would only say that
/// nothing matched).
impl<'de> Deserialize<'de> for MirrorEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = MirrorEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mirror URL or a table with `url`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MirrorEntry, E> {
                Ok(MirrorEntry::Url(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<MirrorEntry, A::Error> {
                MirrorTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(MirrorEntry::Table)
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

/// How a mirror's credential is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorAuth {
    /// `Authorization: Bearer <the file's content>`.
    #[default]
    Bearer,
    /// `Authorization: Basic <base64 of the file's content, user:password>`.
    Basic,
}

/// A mirror's credentials: sent only to `base`'s origin, below its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorCredentials {
    /// The mirror's base URL, as in `mirrors`.
    pub base: String,
    /// The file holding the credential (read when the HTTP client is built, never logged).
    pub file: PathBuf,
    pub auth: MirrorAuth,
}

fn default_connections_per_file() -> usize {
    4
}

fn default_chunk_size() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(32)
}

fn default_max_connections_per_host() -> usize {
    8
}

fn default_recheck_interval() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_min_rate() -> bytesize::ByteSize {
    bytesize::ByteSize::kib(1)
}

fn default_min_rate_window() -> Duration {
    Duration::from_secs(60)
}

fn default_max_retries() -> u32 {
    5
}

fn default_retry_base_delay() -> Duration {
    Duration::from_secs(1)
}

fn default_retry_max_time() -> Duration {
    Duration::from_secs(600)
}

fn default_max_parallel_models() -> usize {
    2
}

fn default_max_parallel_files() -> usize {
    4
}

fn default_keep_previous() -> usize {
    1
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/lib/models/hf-cache")
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("/var/lib/models")
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {key}: {reason}", path.display())]
    Invalid { path: PathBuf, key: &'static str, reason: String },
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // A regular file of at most 1 MiB: a FIFO or /dev/zero named as the config is refused.
        let text = crate::fsx::read_bounded_string(path, crate::fsx::CONFIG)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses config text, JSON when `path` ends in `.json` and TOML otherwise; relative paths
    /// in it are resolved against `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parsed = match Format::of(path) {
            Format::Toml => toml::from_str(text).map_err(|e| e.to_string()),
            Format::Json => from_json(text),
        };
        let mut config: Config = parsed.map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message: message.trim_end().replace('\n', "\n  "),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        for dir in [&mut config.index, &mut config.cache_dir, &mut config.store_dir] {
            *dir = base.join(&*dir);
        }
        for file in
            [&mut config.token_file, &mut config.ca_file, &mut config.metrics_file].into_iter().flatten()
        {
            *file = base.join(&*file);
        }
        let invalid = |key, reason| ConfigError::Invalid { path: path.to_owned(), key, reason };
        for entry in &config.mirror_entries {
            let url = match entry {
                MirrorEntry::Url(url) | MirrorEntry::Table(MirrorTable { url, .. }) => url,
            };
            let mirror = check_mirror(base, url).map_err(|reason| invalid("mirrors", reason))?;
            if let MirrorEntry::Table(table) = entry {
                let file =
                    mirror_credentials_file(base, table).map_err(|reason| invalid("mirrors", reason))?;
                if let Some(file) = file {
                    if mirror.starts_with("file://") {
                        let reason = format!("{mirror}: a file:// mirror takes no credentials");
                        return Err(invalid("mirrors", reason));
                    }
                    let credentials = MirrorCredentials { base: mirror.clone(), file, auth: table.auth };
                    config.mirror_credentials.push(credentials);
                }
            }
            config.mirrors.push(mirror);
        }
        if let Some(proxy) = &config.proxy {
            check_url(proxy, &["http", "https", "socks5", "socks5h"])
                .map_err(|reason| invalid("proxy", reason))?;
        }
        for (key, value) in [
            ("max_parallel_models", config.max_parallel_models),
            ("max_parallel_files", config.max_parallel_files),
            ("connections_per_file", config.connections_per_file),
            ("max_connections_per_host", config.max_connections_per_host),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        if config.chunk_size < bytesize::ByteSize::kib(64) {
            return Err(invalid("chunk_size", "must be at least 64KiB".to_owned()));
        }
        for (key, value) in [
            ("recheck_interval", Some(config.recheck_interval)),
            ("rehash_interval", config.rehash_interval),
            ("min_rate_window", Some(config.min_rate_window)),
        ] {
            if value.is_some_and(|d| d < Duration::from_secs(1)) {
                return Err(invalid(key, "must be at least 1s".to_owned()));
            }
        }
        for (key, value) in
            [("stall_timeout", config.stall_timeout), ("connect_timeout", config.connect_timeout)]
        {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than 0s".to_owned()));
            }
        }
        config.endpoint = check_endpoint(&config.endpoint).map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            key: "endpoint",
            reason,
        })?;
        Ok(config)
    }
}

/// A JSON config; an error names the key it is about (`stall_timeout: invalid type: ...`), as
/// TOML's errors show the line with the key.
fn from_json(text: &str) -> Result<Config, String> {
    let mut json = serde_json::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let key = e.path().to_string();
        if key == "." { e.into_inner().to_string() } else { format!("{key}: {}", e.into_inner()) }
    })?;
    json.end().map_err(|e| e.to_string())?;
    Ok(config)
}

/// An endpoint is an http(s) URL without credentials, query or fragment; returned without a
/// trailing slash.
fn check_endpoint(endpoint: &str) -> Result<String, String> {
    let url = check_url(endpoint, &["http", "https"])?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{endpoint:?} must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A URL with one of `schemes` and no credentials in it.
fn check_url(value: &str, schemes: &[&str]) -> Result<Url, String> {
    let url = Url::parse(value)
        .map_err(|e| format!("{:?} is not a URL: {e}", crate::secret::strip_userinfo(value)))?;
    if !url.username().is_empty() || url.password().is_some() {
        // The value is not echoed: it holds a secret.
        return Err("the URL holds credentials; put the token in token_file instead".to_owned());
    }
    if !schemes.contains(&url.scheme()) {
        return Err(format!("{value:?} must be a {} URL", schemes.join("/")));
    }
    Ok(url)
}

/// A mirror is an http(s) base URL or a `file://` directory (a relative `file:` path is taken
/// relative to the config file); returned without a trailing slash.
fn check_mirror(base: &Path, mirror: &str) -> Result<String, String> {
    if let Some(path) = mirror.strip_prefix("file://") {
        let dir = base.join(path);
        return Ok(format!("file://{}", dir.display()).trim_end_matches('/').to_owned());
    }
    check_url(mirror, &["http", "https", "file"])?;
    Ok(mirror.trim_end_matches('/').to_owned())
}

/// The credentials file of a mirror table: `credentials_file` (relative to the config's
/// folder), or `credential`, a name in `$CREDENTIALS_DIRECTORY` (systemd's LoadCredential=).
fn mirror_credentials_file(base: &Path, table: &MirrorTable) -> Result<Option<PathBuf>, String> {
    match (&table.credentials_file, &table.credential) {
        (Some(_), Some(_)) => Err(format!("{}: credentials_file or credential, not both", table.url)),
        (Some(file), None) => Ok(Some(base.join(file))),
        (None, Some(name)) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!("{}: credential {name:?} must be a plain name", table.url));
            }
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").unwrap_or_default();
            Ok(Some(Path::new(&dir).join(name)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/models-fetch/config.toml"), text)
    }

    #[test]
    fn full_config_parses_and_resolves_relative_paths() {
        let config = parse(
            r#"
            index = "index.json"
            cache_dir = "/var/lib/models/hf-cache"
            store_dir = "/var/lib/models"
            token_file = "/run/credentials/models-fetch.service/hf-token"
            endpoint = "http://127.0.0.1:8080/"
            verify_checksums = true
            deployed_models = ["muladhara-foundation-v1"]
            [chakra_models]
            muladhara = ["muladhara-foundation-v1"]
            "#,
        )
        .unwrap();
        assert_eq!(config.index, Path::new("/etc/models-fetch/index.json"));
        assert_eq!(config.endpoint, "http://127.0.0.1:8080");
        assert_eq!(config.chakra_models["muladhara"], ["muladhara-foundation-v1"]);
    }

    #[test]
    fn defaults_follow_the_seed_module() {
        let config = parse(r#"index = "/x/index.json""#).unwrap();
        assert_eq!(config.cache_dir, Path::new("/var/lib/models/hf-cache"));
        assert_eq!(config.store_dir, Path::new("/var/lib/models"));
        assert_eq!(config.endpoint, "https://huggingface.co");
        assert!(config.verify_checksums);
        assert_eq!(config.token_file, None);
    }

    #[test]
    fn a_bad_value_is_reported_under_its_own_key() {
        for (line, key) in [
            ("rehash_interval = \"0s\"", "rehash_interval"),
            ("recheck_interval = \"0s\"", "recheck_interval"),
            ("connect_timeout = \"0s\"", "connect_timeout"),
            ("stall_timeout = \"0s\"", "stall_timeout"),
            ("min_rate_window = \"0s\"", "min_rate_window"),
        ] {
            let err = parse(&format!("index = \"i.json\"\n{line}\n")).unwrap_err().to_string();
            assert!(err.contains(&format!("{key}: must be")), "{line}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("index = \"i.json\"\ndeployed_model = []\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `deployed_model`"), "{err}");
        assert!(err.starts_with("/etc/models-fetch/config.toml:"), "{err}");
    }

    fn parse_json(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/models-fetch/config.json"), text)
    }

    #[test]
    fn json_reads_the_same_keys_as_toml() {
        let toml = parse(
            r#"
            index = "index.json"
            endpoint = "http://127.0.0.1:8080/"
            stall_timeout = "1m"
            chunk_size = "16MiB"
            rehash_interval = "7d"
            deployed_models = ["anahata-heart-v1"]
            [chakra_models]
            ajna = ["ajna-insight-v2"]
            "#,
        )
        .unwrap();
        let json = parse_json(
            r#"{"index": "index.json", "endpoint": "http://127.0.0.1:8080/", "stall_timeout": "1m",
                "chunk_size": "16MiB", "rehash_interval": "7d", "deployed_models": ["anahata-heart-v1"],
                "chakra_models": {"ajna": ["ajna-insight-v2"]}, "proxy": null}"#,
        )
        .unwrap();
        assert_eq!(json, toml);
        assert_eq!(json.index, Path::new("/etc/models-fetch/index.json"));
    }

    #[test]
    fn json_errors_name_the_file_and_the_key() {
        let err = parse_json(r#"{"index": "i.json", "deployed_model": []}"#).unwrap_err().to_string();
        assert!(err.starts_with("/etc/models-fetch/config.json:"), "{err}");
        assert!(err.contains("unknown field `deployed_model`, expected one of `index`"), "{err}");
        let err = parse_json(r#"{"index": "i.json", "stall_timeout": 30}"#).unwrap_err().to_string();
        assert!(err.starts_with("/etc/models-fetch/config.json: stall_timeout: invalid type"), "{err}");
        let err =
            parse_json(r#"{"index": "i.json", "chakra_models": {"ajna": [1]}}"#).unwrap_err().to_string();
        assert!(err.contains(": chakra_models.ajna[0]: invalid type: integer `1`"), "{err}");
        let err = parse_json(r#"{"index": "i.json", "max_retries": null}"#).unwrap_err().to_string();
        assert!(err.contains("max_retries: invalid type: null"), "{err}");
        let err = parse_json(r#"{"index": "i.json"} {}"#).unwrap_err().to_string();
        assert!(err.contains("trailing characters"), "{err}");
        let err = parse_json(r#"{"deployed_models": []}"#).unwrap_err().to_string();
        assert!(err.contains("missing field `index`"), "{err}");
        // Only a .json name is JSON.
        let err = parse(r#"{"index": "i.json"}"#).unwrap_err().to_string();
        assert!(err.contains("TOML parse error"), "{err}");
    }

    #[test]
    fn default_path_is_the_first_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (toml, json) = (dir.path().join("config.toml"), dir.path().join("config.json"));
        assert_eq!(first_existing(&[&toml, &json]), toml);
        std::fs::write(&json, "{}").unwrap();
        assert_eq!(first_existing(&[&toml, &json]), json);
        std::fs::write(&toml, "").unwrap();
        assert_eq!(first_existing(&[&toml, &json]), toml);
    }

    #[test]
    fn missing_index_is_an_error() {
        let err = parse("deployed_models = []\n").unwrap_err().to_string();
        assert!(err.contains("missing field `index`"), "{err}");
    }

    #[test]
    fn a_mirror_is_a_url_or_a_table_with_its_credentials() {
        let config = parse(
            r#"
            index = "i.json"
            mirrors = [
                "https://plain.example/by-sha256/",
                { url = "https://private.example/models", credentials_file = "mirror-token" },
                { url = "http://10.0.0.9/blobs", credential = "mirror-2", auth = "basic" },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(
            config.mirrors,
            ["https://plain.example/by-sha256", "https://private.example/models", "http://10.0.0.9/blobs"]
        );
        let credentials = &config.mirror_credentials;
        assert_eq!(credentials.len(), 2);
        assert_eq!(credentials[0].base, "https://private.example/models");
        assert_eq!(credentials[0].file, Path::new("/etc/models-fetch/mirror-token"));
        assert_eq!(credentials[0].auth, MirrorAuth::Bearer);
        assert!(credentials[1].file.ends_with("mirror-2"));
        assert_eq!(credentials[1].auth, MirrorAuth::Basic);
        let json = parse_json(
            r#"{"index": "i.json", "mirrors": ["https://plain.example/by-sha256/",
                {"url": "https://private.example/models", "credentials_file": "mirror-token"},
                {"url": "http://10.0.0.9/blobs", "credential": "mirror-2", "auth": "basic"}]}"#,
        )
        .unwrap();
        assert_eq!(json.mirrors, config.mirrors);
        assert_eq!(json.mirror_credentials, config.mirror_credentials);
    }

    #[test]
    fn a_bad_mirror_table_is_named() {
        for (entry, reason) in [
            (r#"{ url = "https://m.example", token = "x" }"#, "unknown field `token`"),
            (r#"{ url = "https://m.example", auth = "digest" }"#, "unknown variant `digest`"),
            (r#"{ credentials_file = "f" }"#, "missing field `url`"),
            (r#"{ url = "https://m.example", credentials_file = "f", credential = "c" }"#, "not both"),
            (r#"{ url = "https://m.example", credential = "../hf-token" }"#, "must be a plain name"),
            (r#"{ url = "file:///srv/mirror", credentials_file = "f" }"#, "takes no credentials"),
            (r#"{ url = "https://u:p@m.example" }"#, "holds credentials"),
            ("1", "expected a mirror URL or a table with `url`"),
        ] {
            let err = parse(&format!("index = \"i\"\nmirrors = [{entry}]\n")).unwrap_err().to_string();
            assert!(err.contains(reason), "{entry}: {err}");
            assert!(!err.contains("u:p"), "{err}");
        }
    }

    #[test]
    fn endpoint_with_credentials_is_refused() {
        let err = parse("index = \"i\"\nendpoint = \"https://u:p@hub.example\"\n").unwrap_err();
        assert!(err.to_string().contains("token_file"), "{err}");
        assert!(!err.to_string().contains("u:p"), "{err}");
        let err = parse("index = \"i\"\nendpoint = \"ftp://hub.example\"\n").unwrap_err();
        assert!(err.to_string().contains("must be a http/https URL"), "{err}");
    }
}
