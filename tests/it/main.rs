//! The integration tests: one binary, one module per concern, all driving the real
//! `models-fetch` executable.

mod config;
mod daemon;
mod e2e;
mod entry;
mod faults;
mod journal;
mod nix;
mod origin;
mod sync;
mod util;
mod validate;
