//! The plan: which models to deploy, where each comes from and what it must hash to (where each
//! is published is the layout's to say). Pure: it reads only the config and the index, never
//! the network or the disk.

use std::collections::BTreeSet;
use std::fmt;

use crate::config::Config;
use crate::index::{Entry, Index, Source, SourceError, StubField, schema};
use crate::item::{Item, ItemFile, is_commit};
use crate::layout::Layout;

/// Every model to deploy, in the order the config names them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub items: Vec<Item>,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.items.iter().map(Item::size_bytes).sum()
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
    let reserved = Layout::new(config).reserved_names();
    let mut items = Vec::new();
    for (id, _) in wanted {
        let Some(entry) = index.get(id) else {
            let mut known: Vec<String> = index.entries.iter().map(|e| e.id.to_string()).collect();
            known.sort();
            errors.push(PlanError::UnknownModel { id: id.to_owned(), known });
            continue;
        };
        if reserved.iter().any(|r| r == id) {
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

fn item(config: &Config, entry: &Entry) -> Result<Item, SourceError> {
    let source = Source::of(entry, &config.endpoint)?;
    let artifact = &entry.artifact;
    let revision = match &source {
        Source::Hub(hub) => Some(hub.revision.as_str()),
        Source::Url(_) => None,
    };
    // Pinned by `commit`, or by a 40-hex revision (the index checks make sure both agree).
    let commit = entry.commit().or(revision.filter(|r| is_commit(r))).map(str::to_ascii_lowercase);
    let primary_path = match &source {
        Source::Hub(hub) => hub.path.clone(),
        Source::Url(_) => artifact.primary_path().to_owned(),
    };
    let set = entry.is_file_set();
    let files: Vec<ItemFile> = entry
        .files()
        .iter()
        .map(|f| ItemFile {
            // A single-file entry keeps its store name, `filename`, and its source's path.
            path: if set { f.path.clone() } else { primary_path.clone() },
            name: if set { f.path.clone() } else { artifact.filename.clone() },
            sha256: f.sha256.clone(),
            size_bytes: f.size_bytes,
            git_oid: f.git_oid.as_deref().map(str::to_ascii_lowercase),
        })
        .collect();
    let primary = files
        .iter()
        .position(|f| f.path == primary_path || f.path == artifact.filename)
        .or_else(|| files.iter().position(|f| f.sha256 == artifact.sha256))
        .unwrap_or(0);
    Ok(Item {
        id: entry.id.clone(),
        version: entry.version.clone(),
        chakra: entry.chakra.clone(),
        source,
        commit,
        files,
        primary,
    })
}
