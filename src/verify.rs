//! What a download must be and what it turned out to be: the index's sha256 and size against
//! the digest and size of the bytes on disk (computed while streaming, by `sink`).

use crate::digest::Sha256Hex;

/// What the index says the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Sha256Hex,
    pub size: u64,
    /// The git blob sha1 of a small file kept in git (`gitOid`), which the Hub answers as its
    /// `ETag`: compared before anything is downloaded.
    pub git_oid: Option<String>,
}

/// What a finished transfer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// The bytes are not the ones the index names: both values, for the message and the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("size mismatch: expected {expected} bytes, got {got}")]
    Size { expected: u64, got: u64 },
    #[error("checksum mismatch: expected sha256 {expected}, got {got}")]
    Sha256 { expected: Sha256Hex, got: Sha256Hex },
}

/// Compares what was written with what the index says: size first, then sha256.
pub fn check(written: &Written, expected: &Expected) -> Result<(), Mismatch> {
    if written.size != expected.size {
        return Err(Mismatch::Size { expected: expected.size, got: written.size });
    }
    if written.sha256 != expected.sha256 {
        return Err(Mismatch::Sha256 { expected: expected.sha256.clone(), got: written.sha256.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hash_reader;

    fn expected_of(data: &[u8]) -> Expected {
        let (sha256, size) = hash_reader(data).unwrap();
        Expected { sha256, size, git_oid: None }
    }

    #[test]
    fn mismatches_name_both_values() {
        let expected = expected_of(b"abc");
        let wrong = Written { sha256: expected_of(b"abd").sha256, size: 3 };
        let err = check(&wrong, &expected).unwrap_err();
        assert_eq!(err, Mismatch::Sha256 { expected: expected.sha256.clone(), got: wrong.sha256.clone() });
        let text = err.to_string();
        assert!(text.contains(expected.sha256.as_str()) && text.contains(wrong.sha256.as_str()), "{text}");
        let short = Written { sha256: expected.sha256.clone(), size: 2 };
        let err = check(&short, &expected).unwrap_err();
        assert_eq!(err, Mismatch::Size { expected: 3, got: 2 });
        assert!(err.to_string().contains("expected 3 bytes, got 2"));
        assert_eq!(check(&Written { sha256: expected.sha256.clone(), size: 3 }, &expected), Ok(()));
    }
}
