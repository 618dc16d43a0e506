//! models-fetch puts machine-learning model files on a host safely: every file named in the
//! model index is fetched, checked against its SHA-256 and size, and published atomically, so
//! no reader ever sees a partial or wrong file.
//!
//! Data flows one way, one module per stage:
//! `config` (the daemon's TOML) -> `index` (the model index and its schema) -> `plan` (what to
//! put where) -> fetch -> verify -> publish -> report. `digest` holds the SHA-256 type and
//! streaming hashing; `cli` is the command-line glue.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod fetch;
pub mod fsx;
pub mod index;
pub mod item;
pub mod layout;
pub mod plan;
pub mod publish;
pub mod report;
pub mod secret;
pub mod sink;
pub mod sync;
pub mod verify;
