//! Secrets: the Hub token, which never prints itself, and URLs with their query strings (the
//! signatures of presigned CDN URLs) removed before they reach a log line or an error.

use std::fmt;
use std::path::{Path, PathBuf};

/// The Hub token. `Debug` and `Display` print `<redacted>`; only `header_value` reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Reads a token file: surrounding whitespace is trimmed; a missing, unreadable or empty
    /// file, or anything but a regular file of at most 4 KiB (a FIFO, a device, a directory:
    /// refused unread, so none hangs or fills memory, and no oversized header is ever sent), is
    /// an error that names the path and never the content.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let err = |reason: String| TokenError { path: path.to_owned(), reason };
        let text =
            crate::fsx::read_bounded_string(path, crate::fsx::TOKEN).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// A token from text (a file's content, an environment variable): surrounding whitespace
    /// trimmed; empty, or with a space or a control character inside, is an error that never
    /// holds the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("is empty".to_owned());
        }
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err("holds more than one word; it must hold the token alone".to_owned());
        }
        Ok(Self(token.to_owned()))
    }

    /// `Bearer <token>`, marked sensitive so HTTP debug output leaves it out.
    pub fn header_value(&self) -> reqwest::header::HeaderValue {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("a token without control characters is a valid header value");
        value.set_sensitive(true);
        value
    }

    /// The token's text, for tests that must assert it appears nowhere.
    #[cfg(test)]
    pub fn expose_for_tests(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why the token file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token_file {}: {reason}", path.display())]
pub struct TokenError {
    pub path: PathBuf,
    pub reason: String,
}

/// A URL fit for logs: credentials and the query string (presigned signatures) are removed.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let had_query = parsed.query().is_some();
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut text = parsed.to_string();
            if had_query {
                text.push_str("?<redacted>");
            }
            text
        }
        Err(_) => strip_userinfo(url.split(['?', '#']).next().unwrap_or_default()),
    }
}

/// Removes `user:password@` from text that looks like a URL but does not parse as one.
pub fn strip_userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
        // No scheme: whatever precedes an `@` may be credentials.
        return text
            .rfind('@')
            .map_or_else(|| text.to_owned(), |at| format!("<redacted>@{}", &text[at + 1..]));
    };
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>@{}", &text[..scheme_end], &rest[at + 1..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  hf_secretvalue\n").unwrap();
        let token = Token::read(&path).unwrap();
        assert_eq!(token.expose_for_tests(), "hf_secretvalue");
        assert!(!format!("{token} {token:?}").contains("secret"));
        assert!(token.header_value().is_sensitive());
    }

    #[test]
    fn bad_token_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(Token::read(&empty).unwrap_err().to_string().ends_with("is empty"));
        assert!(Token::read(dir.path()).unwrap_err().to_string().contains("is a directory"));
        let missing = Token::read(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(missing.contains("missing"), "{missing}");
        let two = dir.path().join("two");
        std::fs::write(&two, "a b").unwrap();
        assert!(Token::read(&two).unwrap_err().to_string().contains("more than one word"));
    }

    #[test]
    fn a_fifo_a_device_or_a_huge_file_is_no_token() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let e = Token::read(&fifo).unwrap_err().to_string();
        assert!(e.starts_with("token_file ") && e.contains("is a FIFO"), "{e}");
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(Token::read(&zero).unwrap_err().to_string().contains("is a character device"));
        let huge = dir.path().join("huge");
        std::fs::write(&huge, "hf_".repeat(10_000)).unwrap();
        let e = Token::read(&huge).unwrap_err().to_string();
        assert!(e.contains("larger than 4 KiB (the limit for a token file)"), "{e}");
        assert!(!e.contains("hf_"), "{e}");
    }

    #[test]
    fn presigned_queries_and_credentials_are_redacted() {
        assert_eq!(
            redact("https://cdn.example/abc?X-Amz-Signature=s3cr3t&X-Amz-Expires=3600"),
            "https://cdn.example/abc?<redacted>"
        );
        assert_eq!(redact("https://user:pw@hub.example/x"), "https://hub.example/x");
        assert_eq!(
            redact("https://hub.example/o/n/resolve/main/f"),
            "https://hub.example/o/n/resolve/main/f"
        );
        assert_eq!(redact("not a url?sig=1"), "not a url");
        assert_eq!(
            redact("*ttps://user:hunter22@cdn.example/x?X-Amz-Signature=s"),
            "*ttps://<redacted>@cdn.example/x"
        );
        assert_eq!(strip_userinfo("https://u:p@[bad-host"), "https://<redacted>@[bad-host");
    }
}
