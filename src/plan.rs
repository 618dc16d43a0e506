//! The plan: which models to deploy, where each comes from, what it must hash to, and where it
//! is published. Pure: it reads only the config and the index, never the network or the disk.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::digest::Sha256Hex;
use crate::index::{Entry, Index, ModelId, Source, SourceError, StubField, schema};
use crate::publish;

/// One model to put on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: ModelId,
    pub version: String,
    pub chakra: String,
    #[serde(serialize_with = "source_url")]
    pub source: Source,
    pub sha256: Sha256Hex,
    pub size_bytes: u64,
    /// The file in the download cache, named by its sha256 (the Hub cache's blob for Hub files).
    pub blob_path: PathBuf,
    /// The stable path consumers read: `<store_dir>/<id>/<filename>`.
    pub store_path: PathBuf,
}

fn source_url<S: serde::Serializer>(source: &Source, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&source.url())
}

/// Every model to deploy, in the order the config names them.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(|i| i.size_bytes).sum()
    }
}

/// Why the config cannot be deployed with this index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    Empty,
    UnknownModel { id: String, known: Vec<String> },
    NotAChakra { key: String },
    WrongChakra { id: String, listed: String, actual: String },
    Stub { id: String, fields: Vec<StubField> },
    NoSource { id: String, error: SourceError },
    ReservedId { id: String },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Empty => f.write_str(
                "nothing to deploy: deployed_models and chakra_models are both empty; list at least one model id",
            ),
            PlanError::UnknownModel { id, known } if known.is_empty() => {
                write!(f, "Model '{id}' not found in index (the index has no models)")
            }
            PlanError::UnknownModel { id, known } => {
                write!(f, "Model '{id}' not found in index (known ids: {})", known.join(", "))
            }
            PlanError::NotAChakra { key } => write!(
                f,
                "chakra_models.{key}: '{key}' is not a chakra (one of: {})",
                schema::chakras().join(", ")
            ),
            PlanError::WrongChakra { id, listed, actual } => write!(
                f,
                "Model '{id}' is listed under chakra_models.{listed} but its index entry says chakra '{actual}'; move it to chakra_models.{actual}"
            ),
            PlanError::Stub { id, fields } => {
                let fields: Vec<String> = fields.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "Model '{id}' is a stub entry and cannot be deployed; replace the placeholder values of: {}",
                    fields.join(", ")
                )
            }
            PlanError::NoSource { id, error } => write!(f, "Model '{id}': {error}"),
            PlanError::ReservedId { id } => write!(
                f,
                "Model '{id}': the id names a folder models-fetch uses inside store_dir; rename the model in the index"
            ),
        }
    }
}

/// Every problem found while planning, all reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the config cannot be deployed with {index}:\n{}", list(.errors))]
pub struct PlanErrors {
    pub index: String,
    pub errors: Vec<PlanError>,
}

fn list(errors: &[PlanError]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// The ids to deploy: `deployed_models` united with every `chakra_models` list, first mention
/// first, each id once.
fn wanted(config: &Config) -> Vec<(&str, Option<&str>)> {
    let mut seen = BTreeSet::new();
    let listed = config.deployed_models.iter().map(|id| (id.as_str(), None));
    let by_chakra = config
        .chakra_models
        .iter()
        .flat_map(|(chakra, ids)| ids.iter().map(move |id| (id.as_str(), Some(chakra.as_str()))));
    listed.chain(by_chakra).filter(|(id, _)| seen.insert(*id)).collect()
}

/// Builds the plan, or every reason it cannot be built.
pub fn plan(config: &Config, index: &Index) -> Result<Plan, PlanErrors> {
    let mut errors = Vec::new();
    let chakras = schema::chakras();
    for key in config.chakra_models.keys() {
        if !chakras.contains(&key.as_str()) {
            errors.push(PlanError::NotAChakra { key: key.clone() });
        }
    }
    // A model listed twice under different chakras: report each wrong listing.
    for (chakra, ids) in &config.chakra_models {
        for id in ids {
            if let Some(entry) = index.get(id)
                && entry.chakra != *chakra
            {
                errors.push(PlanError::WrongChakra {
                    id: id.clone(),
                    listed: chakra.clone(),
                    actual: entry.chakra.clone(),
                });
            }
        }
    }
    let wanted = wanted(config);
    if wanted.is_empty() {
        errors.push(PlanError::Empty);
    }
    let mut items = Vec::new();
    for (id, _) in wanted {
        let Some(entry) = index.get(id) else {
            let mut known: Vec<String> = index.entries.iter().map(|e| e.id.to_string()).collect();
            known.sort();
            errors.push(PlanError::UnknownModel { id: id.to_owned(), known });
            continue;
        };
        if reserved_names(config).iter().any(|r| r == id) {
            errors.push(PlanError::ReservedId { id: id.to_owned() });
            continue;
        }
        let stubs = index.stub_fields(id);
        if !stubs.is_empty() {
            errors.push(PlanError::Stub { id: id.to_owned(), fields: stubs.to_vec() });
            continue;
        }
        match item(config, entry) {
            Ok(item) => items.push(item),
            Err(error) => errors.push(PlanError::NoSource { id: id.to_owned(), error }),
        }
    }
    if errors.is_empty() {
        Ok(Plan { items })
    } else {
        Err(PlanErrors { index: index.path.display().to_string(), errors })
    }
}

/// Names inside `store_dir` that a model directory must not take: the chakra links, and the
/// cache directory when it lies directly inside `store_dir` (as with the defaults).
fn reserved_names(config: &Config) -> Vec<String> {
    let mut names = vec![publish::BY_CHAKRA.to_owned()];
    if let Ok(inside) = config.cache_dir.strip_prefix(&config.store_dir)
        && let Some(first) = inside.components().next()
    {
        names.push(first.as_os_str().to_string_lossy().into_owned());
    }
    names
}

fn item(config: &Config, entry: &Entry) -> Result<Item, SourceError> {
    let source = Source::of(entry, &config.endpoint)?;
    let sha256 = entry.artifact.sha256.clone();
    let blob_path = match &source {
        Source::Hub(hub) => config.cache_dir.join(hub.cache_folder()).join("blobs"),
        // Not a Hub file: kept out of the Hub cache, whose scanner would flag it.
        Source::Url(_) => config.store_dir.join(publish::STATE_DIR).join("blobs"),
    }
    .join(sha256.as_str());
    Ok(Item {
        id: entry.id.clone(),
        version: entry.version.clone(),
        chakra: entry.chakra.clone(),
        source,
        sha256,
        size_bytes: entry.artifact.size_bytes,
        blob_path,
        store_path: config.store_dir.join(entry.id.as_str()).join(&entry.artifact.filename),
    })
}
