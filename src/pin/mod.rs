//! Pinning a model to the files of one commit, without the network: which files a selection
//! takes ([`select`]), which of them is the primary file ([`primary`]), and what changed
//! between two pins ([`diff`]).

pub(crate) mod diff;
pub(crate) mod primary;
pub(crate) mod select;

/// One file of a pin: its path in the repository, its content's sha256 and size, and for a
/// file kept in git (not LFS) its git blob sha1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinnedFile {
    pub(crate) path: String,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) git_oid: Option<String>,
}
