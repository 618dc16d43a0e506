//! One model to put on disk: what to fetch, from where, and what each of its files must hash
//! to. Where it goes is the layout's to say (`crate::layout`), not the item's.
//!
//! A model is a set of files from one repository at one commit; a single-file entry is a set of
//! one, whose store name stays the entry's `filename`.
//!
//! The item is also the daemon's task key: two items that compare equal are the same task, so
//! every field takes part in the comparison a reload makes.

use crate::digest::Sha256Hex;
use crate::index::{HubFile, ModelId, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: ModelId,
    pub version: String,
    pub chakra: String,
    /// Where the model comes from: for the Hub, the repository and the revision the index
    /// names (its `path` is the primary file's); or a plain URL of the primary file.
    pub source: Source,
    /// The 40-hex commit the model is pinned to: `artifact.commit`, or a 40-hex `revision`.
    pub commit: Option<String>,
    /// Every file of the model, in index order; never empty.
    pub files: Vec<ItemFile>,
    /// Which of `files` is the primary file (`filename`/`sha256`/`sizeBytes`).
    pub primary: usize,
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFile {
    /// Its path in the repository (`/`-separated).
    pub path: String,
    /// Its path inside the model's folder of the store: `path`, or for a single-file entry its
    /// `filename`.
    pub name: String,
    pub sha256: Sha256Hex,
    pub size_bytes: u64,
    /// The git blob sha1 the Hub answers as `ETag` for a small non-LFS file, when the index
    /// gives it.
    pub git_oid: Option<String>,
}

impl Item {
    /// The primary file.
    pub fn primary(&self) -> &ItemFile {
        &self.files[self.primary]
    }

    /// The bytes of every file.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    /// The Hub repository the model comes from, if it does.
    pub fn hub(&self) -> Option<&HubFile> {
        match &self.source {
            Source::Hub(hub) => Some(hub),
            Source::Url(_) => None,
        }
    }

    /// Where `file` is resolved on the Hub: at the pinned commit when there is one (so every
    /// file comes from the same commit), else at the index's revision.
    pub fn hub_file(&self, file: &ItemFile) -> Option<HubFile> {
        let hub = self.hub()?;
        Some(HubFile {
            endpoint: hub.endpoint.clone(),
            repo: hub.repo.clone(),
            revision: self.commit.clone().unwrap_or_else(|| hub.revision.clone()),
            path: file.path.clone(),
        })
    }

    /// The name of the ref that points at the model's commit: the index's revision, or `main`
    /// for a model pinned by its commit only (a 40-hex revision names no ref).
    pub fn ref_name(&self) -> Option<&str> {
        let hub = self.hub()?;
        Some(if is_commit(&hub.revision) { "main" } else { hub.revision.as_str() })
    }

    /// A digest of the file set as the store's folder holds it: sha256 over the sorted
    /// (name, sha256, size) of every file and the source's kind and repository, so another
    /// set, or the same files from elsewhere, is another folder.
    pub fn set_digest(&self) -> Sha256Hex {
        let mut lines: Vec<String> =
            self.files.iter().map(|f| format!("{}\0{}\0{}\n", f.name, f.sha256, f.size_bytes)).collect();
        lines.sort();
        let from = match &self.source {
            Source::Hub(hub) => format!("hub\0{}\n", hub.repo),
            Source::Url(_) => "url\n".to_owned(),
        };
        let text = std::iter::once(from).chain(lines).collect::<String>();
        crate::digest::hash_reader(text.as_bytes()).expect("hashing memory cannot fail").0
    }
}

/// Whether `s` is a full commit id (40 hex digits).
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
