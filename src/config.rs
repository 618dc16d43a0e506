//! The daemon's configuration file (TOML), as the NixOS module renders it.
//!
//! Parsing is strict: an unknown key is an error naming the key. Relative paths are taken
//! relative to the directory of the config file, so a config and its index can travel together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::index::source::DEFAULT_ENDPOINT;

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
    /// Verify SHA-256 of every downloaded file against the index.
    #[serde(default = "yes")]
    pub verify_checksums: bool,
    /// Model ids to deploy.
    #[serde(default)]
    pub deployed_models: Vec<String>,
    /// Model ids to deploy, grouped by chakra; each must be listed under its own chakra.
    #[serde(default)]
    pub chakra_models: BTreeMap<String, Vec<String>>,
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
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses config text; relative paths in it are resolved against `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        for dir in [&mut config.index, &mut config.cache_dir, &mut config.store_dir] {
            *dir = base.join(&*dir);
        }
        if let Some(token_file) = &mut config.token_file {
            *token_file = base.join(&*token_file);
        }
        config.endpoint = check_endpoint(&config.endpoint).map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            key: "endpoint",
            reason,
        })?;
        Ok(config)
    }
}

/// An endpoint is an http(s) URL without credentials, query or fragment; returned without a
/// trailing slash.
fn check_endpoint(endpoint: &str) -> Result<String, String> {
    let url = Url::parse(endpoint).map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        // The value is not echoed: it holds a secret.
        return Err("the URL holds credentials; put the token in token_file instead".to_owned());
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{endpoint:?} must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{endpoint:?} must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
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
    fn unknown_keys_are_named() {
        let err = parse("index = \"i.json\"\ndeployed_model = []\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `deployed_model`"), "{err}");
        assert!(err.starts_with("/etc/models-fetch/config.toml:"), "{err}");
    }

    #[test]
    fn missing_index_is_an_error() {
        let err = parse("deployed_models = []\n").unwrap_err().to_string();
        assert!(err.contains("missing field `index`"), "{err}");
    }

    #[test]
    fn endpoint_with_credentials_is_refused() {
        let err = parse("index = \"i\"\nendpoint = \"https://u:p@hub.example\"\n").unwrap_err();
        assert!(err.to_string().contains("token_file"), "{err}");
        assert!(!err.to_string().contains("u:p"), "{err}");
        let err = parse("index = \"i\"\nendpoint = \"ftp://hub.example\"\n").unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
    }
}
