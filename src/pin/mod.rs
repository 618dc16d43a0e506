//! Pinning a model to a set of files, without the network: which of them is the primary file
//! ([`primary`]).

pub(crate) mod primary;
