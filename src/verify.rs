//! What a download must be and what it turned out to be: the index's sha256 and size against
//! the digest and size of the bytes on disk (computed while streaming, by `sink`).

use crate::digest::Sha256Hex;
use crate::fetch::FetchError;

/// What the index says the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// What a finished transfer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Compares what was written with what the index says: size first, then sha256.
pub fn check(written: &Written, expected: &Expected) -> Result<(), FetchError> {
    if written.size != expected.size {
        return Err(FetchError::integrity(format!(
            "size mismatch: expected {} bytes, got {}",
            expected.size, written.size
        )));
    }
    if written.sha256 != expected.sha256 {
        return Err(FetchError::integrity(format!(
            "checksum mismatch: expected sha256 {}, got {}",
            expected.sha256, written.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hash_reader;

    fn expected_of(data: &[u8]) -> Expected {
        let (sha256, size) = hash_reader(data).unwrap();
        Expected { sha256, size }
    }

    #[test]
    fn mismatches_name_both_values() {
        let expected = expected_of(b"abc");
        let wrong = Written { sha256: expected_of(b"abd").sha256, size: 3 };
        let err = check(&wrong, &expected).unwrap_err();
        assert!(
            err.message.contains(expected.sha256.as_str()) && err.message.contains(wrong.sha256.as_str())
        );
        let short = Written { sha256: expected.sha256.clone(), size: 2 };
        assert!(check(&short, &expected).unwrap_err().message.contains("expected 3 bytes, got 2"));
    }
}
