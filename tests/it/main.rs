//! The integration tests: one binary, one module per concern, all driving the real
//! `models-fetch` executable.

mod bounded;
mod config;
mod crash;
mod daemon;
mod diskfull;
mod e2e;
mod entry;
mod faults;
mod fixture;
mod fleet;
mod fuzz_corpus;
mod hostile;
mod hubfixture;
mod journal;
mod lifecycle;
mod lock;
mod matrix;
mod models;
mod modules;
mod nix;
mod origin;
mod secrets;
mod sets;
mod slow;
mod sync;
mod util;
mod validate;
