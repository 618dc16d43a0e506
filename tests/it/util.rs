//! The names `nix.rs` imports as `crate::util::...`; they live in [`crate::fixture`], which
//! every other module uses directly.

pub use crate::fixture::{models_fetch, root, temp_dir, text, write};
