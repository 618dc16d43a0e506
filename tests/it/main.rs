//! The integration tests: one binary, one module per concern, all driving the real
//! `models-fetch` executable.

mod config;
mod entry;
mod sync;
mod util;
mod validate;
