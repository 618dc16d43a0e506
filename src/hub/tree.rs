//! The Hub's JSON, read strictly enough to pin from it: the model-info `sha`, the tree
//! endpoint's entries (`{type, path, oid, size, lfs: {oid, size, pointerSize}, xetHash}`; the
//! LFS sha256 is `lfs.oid`), and the `Link: <...>; rel="next"` header of its pages.

use serde::Deserialize;
use serde_json::Value;

/// One file the tree lists (directories are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeFile {
    pub(crate) path: String,
    pub(crate) size: Option<u64>,
    /// The git blob id: of the content for a file kept in git, of the LFS pointer otherwise.
    pub(crate) oid: Option<String>,
    pub(crate) lfs: Option<Lfs>,
}

/// A tree entry's `lfs` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lfs {
    /// `lfs.oid`, as listed (a sha256, or something redacted).
    pub(crate) oid: Option<String>,
    pub(crate) size: Option<u64>,
}

/// What a pin of one file needs, read from its tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// An LFS (or Xet) file: the Hub publishes its sha256; nothing to download.
    Lfs { sha256: String, size: u64 },
    /// A file kept in git: only its git blob id is published; it must be downloaded and hashed.
    Git { oid: String, size: u64 },
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    oid: Option<String>,
    size: Option<u64>,
    lfs: Option<RawLfs>,
}

#[derive(Deserialize)]
struct RawLfs {
    oid: Option<String>,
    size: Option<u64>,
}

/// The files of one page of the tree endpoint (a JSON array).
pub(crate) fn parse_page(page: &Value) -> Result<Vec<TreeFile>, String> {
    let Value::Array(entries) = page else {
        return Err("the tree answer is not a JSON array".to_owned());
    };
    let mut files = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let raw: RawEntry = serde_json::from_value(entry.clone())
            .map_err(|e| format!("tree entry {i} is not {{type, path, ...}}: {e}"))?;
        match raw.kind.as_str() {
            "directory" => {}
            "file" => files.push(TreeFile {
                path: raw.path,
                size: raw.size,
                oid: raw.oid,
                lfs: raw.lfs.map(|l| Lfs { oid: l.oid, size: l.size }),
            }),
            other => {
                return Err(format!("tree entry {:?} has type {other:?}, not file or directory", raw.path));
            }
        }
    }
    Ok(files)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl TreeFile {
    /// The sha256 and size (LFS) or the git blob id and size (git) a pin needs; an error says
    /// what is missing or redacted.
    pub(crate) fn content(&self) -> Result<Content, String> {
        let shown = |v: &Option<String>| v.as_deref().map_or_else(|| "none".to_owned(), |s| format!("{s:?}"));
        match &self.lfs {
            Some(lfs) => {
                let sha256 = lfs.oid.as_deref().filter(|o| is_hex(o, 64)).ok_or_else(|| {
                    format!("its LFS sha256 (lfs.oid) is missing or redacted: {}", shown(&lfs.oid))
                })?;
                let size = lfs.size.or(self.size).ok_or("its size is missing")?;
                if let (Some(listed), Some(lfs_size)) = (self.size, lfs.size)
                    && listed != lfs_size
                {
                    return Err(format!("the tree lists {listed} bytes but its LFS data {lfs_size}"));
                }
                Ok(Content::Lfs { sha256: sha256.to_ascii_lowercase(), size })
            }
            None => {
                let oid = self.oid.as_deref().filter(|o| is_hex(o, 40)).ok_or_else(|| {
                    format!("its git blob id (oid) is missing or redacted: {}", shown(&self.oid))
                })?;
                let size = self.size.ok_or("its size is missing")?;
                Ok(Content::Git { oid: oid.to_ascii_lowercase(), size })
            }
        }
    }
}

/// The commit (`sha`) of a model-info answer: 40 hex digits, lowercased.
pub(crate) fn commit_of(info: &Value) -> Result<String, String> {
    match info.get("sha").and_then(Value::as_str) {
        Some(sha) if is_hex(sha, 40) => Ok(sha.to_ascii_lowercase()),
        Some(sha) => Err(format!(
            "the model info's sha {:?} is not a 40-hex commit id",
            sha.chars().take(80).collect::<String>()
        )),
        None => Err("the model info has no sha (the commit)".to_owned()),
    }
}

/// The URL of `rel="next"` in a `Link` header (`<url>; rel="next", <url>; rel="prev"`).
pub(crate) fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let url = &rest[start + 1..end];
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((key, value)) = p.split_once('=') else { return false };
            key.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(url);
        }
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pages_list_files_with_what_a_pin_needs() {
        let page = json!([
            {"type": "directory", "oid": "d".repeat(40), "size": 0, "path": "1_Pooling"},
            {"type": "file", "oid": "a".repeat(40), "size": 12, "path": "1_Pooling/config.json"},
            {"type": "file", "oid": "b".repeat(40), "size": 5000, "path": "model.safetensors",
             "lfs": {"oid": "C".repeat(64), "size": 5000, "pointerSize": 134}, "xetHash": "****"},
        ]);
        let files = parse_page(&page).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].content(), Ok(Content::Git { oid: "a".repeat(40), size: 12 }));
        assert_eq!(files[1].content(), Ok(Content::Lfs { sha256: "c".repeat(64), size: 5000 }));
    }

    #[test]
    fn redacted_or_missing_hashes_cannot_be_pinned() {
        let lfs = |oid: Option<&str>| TreeFile {
            path: "m.gguf".into(),
            size: Some(9),
            oid: Some("b".repeat(40)),
            lfs: Some(Lfs { oid: oid.map(Into::into), size: Some(9) }),
        };
        assert!(lfs(Some("****")).content().unwrap_err().contains("missing or redacted: \"****\""));
        assert!(lfs(None).content().unwrap_err().contains("missing or redacted: none"));
        let git = TreeFile { path: "c.json".into(), size: Some(3), oid: None, lfs: None };
        assert!(git.content().unwrap_err().contains("git blob id"));
        let mismatch = TreeFile { size: Some(8), ..lfs(Some(&"a".repeat(64))) };
        assert!(mismatch.content().unwrap_err().contains("8 bytes but its LFS data 9"));
        assert!(parse_page(&json!({"error": "x"})).is_err());
        assert!(parse_page(&json!([{"type": "submodule", "path": "x"}])).is_err());
    }

    #[test]
    fn the_commit_is_40_hex() {
        assert_eq!(commit_of(&json!({"sha": "A".repeat(40)})), Ok("a".repeat(40)));
        assert!(commit_of(&json!({"sha": "main"})).is_err());
        assert!(commit_of(&json!({})).is_err());
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        assert_eq!(next_link(r#"<https://h/api/x?cursor=2>; rel="next""#), Some("https://h/api/x?cursor=2"));
        assert_eq!(
            next_link(r#"<https://h/p1>; rel="prev", <https://h/p3>; rel="next""#),
            Some("https://h/p3")
        );
        assert_eq!(next_link(r#"<https://h/p3>; title="a"; rel=next"#), Some("https://h/p3"));
        assert_eq!(next_link(r#"<https://h/p1>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
    }
}
