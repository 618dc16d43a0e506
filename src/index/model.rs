//! The typed model entry, deserialized only after the schema check has passed.
//!
//! Nested objects of the index allow fields beyond those named here (as the original schema
//! did); they are kept in the file but not needed by the program, so they are not typed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::digest::Sha256Hex;

/// A model id from the index, e.g. `muladhara-foundation-v1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct ModelId(String);

impl ModelId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One index entry (`#/definitions/entry`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: ModelId,
    pub version: String,
    pub chakra: String,
    pub frequency_hz: f64,
    pub geometry: Geometry,
    pub temporal_scope: String,
    pub semantic_tags: Vec<String>,
    pub dataset: Dataset,
    pub training: Training,
    pub artifact: Artifact,
    pub license: String,
    pub provenance: Provenance,
    pub description: Option<String>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Geometry {
    pub pattern: String,
    #[serde(deserialize_with = "whole_number")]
    pub dimensions: u64,
    pub coordinates: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dataset {
    pub id: String,
    pub url: String,
    pub commit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Training {
    pub repo: String,
    pub command: String,
    pub commit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub run_id: String,
    pub timestamp: Option<String>,
    pub creator: Option<String>,
    pub metrics: Option<BTreeMap<String, serde_json::Value>>,
}

/// The model file and where it comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub filename: String,
    pub sha256: Sha256Hex,
    #[serde(deserialize_with = "whole_number")]
    pub size_bytes: u64,
    pub format: Option<String>,
    pub download_url: Option<String>,
    /// Hub repository `org/name`.
    pub repo: Option<String>,
    /// Hub revision; `main` when absent.
    pub revision: Option<String>,
    /// Path inside the Hub repository; `filename` when absent.
    pub path: Option<String>,
    /// The 40-hex commit of the Hub repository the model is pinned to (required with `files`).
    pub commit: Option<String>,
    /// Every file of the model, as the index lists them; `None` for a single-file entry. Use
    /// [`Entry::files`], which gives the one primary file for such an entry.
    pub files: Option<Vec<ModelFile>>,
    /// The file selection `files` was pinned with (`models-fetch lock`), for `lock --update`.
    pub select: Option<Select>,
}

/// `artifact.select`: glob patterns of the files a model takes from its repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Select {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Artifact {
    /// Where the primary file (`filename`/`sha256`/`sizeBytes`) is in the repository: `path`,
    /// else `filename`.
    pub fn primary_path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.filename)
    }
}

/// One file of a model (`#/definitions/repoFile`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFile {
    /// Path relative to the repository root, `/`-separated; checked safe by the index checks.
    pub path: String,
    pub sha256: Sha256Hex,
    #[serde(deserialize_with = "whole_number")]
    pub size_bytes: u64,
    /// The git blob sha1 (40 hex) the Hub reports as `ETag` for a small non-LFS file.
    pub git_oid: Option<String>,
}

impl Entry {
    /// Every file of the model, in index order: `artifact.files` when given, else one file made
    /// of the primary file (at `artifact.path`, else `filename`; no `gitOid`). For an entry with
    /// `files`, the primary file is one of them (the index checks make sure).
    pub fn files(&self) -> Cow<'_, [ModelFile]> {
        let artifact = &self.artifact;
        match &artifact.files {
            Some(files) => Cow::Borrowed(files),
            None => Cow::Owned(vec![ModelFile {
                path: artifact.primary_path().to_owned(),
                sha256: artifact.sha256.clone(),
                size_bytes: artifact.size_bytes,
                git_oid: None,
            }]),
        }
    }

    /// The commit the model is pinned to (`artifact.commit`), when the index gives one.
    pub fn commit(&self) -> Option<&str> {
        self.artifact.commit.as_deref()
    }

    /// Whether the index lists the model's files (`artifact.files`), rather than one file.
    pub fn is_file_set(&self) -> bool {
        self.artifact.files.is_some()
    }
}

/// JSON Schema's `integer` admits `3.0`; serde's `u64` does not, so accept both.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    match number.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(64) => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number of bytes"))),
    }
}
