//! The properties the fuzz targets check (see `properties.rs`).

pub mod properties;
