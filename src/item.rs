//! One model to put on disk: what to fetch, from where, and what it must hash to. Where it
//! goes is the layout's to say (`crate::layout`), not the item's.
//!
//! The item is also the daemon's task key: two items that compare equal are the same task, so
//! every field takes part in the comparison a reload makes.

use crate::digest::Sha256Hex;
use crate::index::{ModelId, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: ModelId,
    pub version: String,
    pub chakra: String,
    pub source: Source,
    pub sha256: Sha256Hex,
    pub size_bytes: u64,
    /// The name consumers read it under, inside the model's folder of the store (may hold
    /// folders of its own).
    pub filename: String,
}
