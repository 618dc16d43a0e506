//! Which files of a repository a model takes: `--include`/`--exclude` globs as `hf download`
//! and `snapshot_download(allow_patterns=..., ignore_patterns=...)` read them (Python's
//! `fnmatch` on the whole path, so `*` also crosses `/`; a pattern ending in `/` means
//! everything under that folder), and without any `--include` every file but the Hub's
//! repository housekeeping.

/// Files the Hub keeps for the repository itself, not for the model: left out unless an
/// `--include` pattern selects them.
pub(crate) const HOUSEKEEPING: &[&str] = &[".gitattributes"];

/// The patterns of a selection, as given (and as stored in `artifact.select`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

impl Selection {
    /// Whether the file at `path` (relative to the repository root) is selected: matched by an
    /// include pattern (without any, not housekeeping) and by no exclude pattern.
    pub(crate) fn selects(&self, path: &str) -> bool {
        let included = if self.include.is_empty() {
            !HOUSEKEEPING.contains(&path)
        } else {
            self.include.iter().any(|p| matches(p, path))
        };
        included && !self.exclude.iter().any(|p| matches(p, path))
    }

    /// Whether this is the default selection (no patterns at all).
    pub(crate) fn is_default(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// `fnmatch(path, pattern)` as Python's (case-sensitive, as on Linux), with huggingface_hub's
/// rule that a pattern ending in `/` matches everything under that folder.
pub(crate) fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<char> = if pattern.ends_with('/') {
        format!("{pattern}*").chars().collect()
    } else {
        pattern.chars().collect()
    };
    let path: Vec<char> = path.chars().collect();
    fnmatch(&pattern, &path)
}

/// One element of a pattern.
enum Token {
    /// `*`: any run of characters, `/` included.
    Star,
    /// `?`: any one character.
    Any,
    /// `[...]` or `[!...]`: one character in (or not in) the set.
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    Literal(char),
}

fn tokens(pattern: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '*' => {
                // Several stars in a row are one.
                if !matches!(out.last(), Some(Token::Star)) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::Any);
                i += 1;
            }
            '[' => match class(pattern, i) {
                Some((token, next)) => {
                    out.push(token);
                    i = next;
                }
                // An unclosed `[` is a literal, as in fnmatch.
                None => {
                    out.push(Token::Literal('['));
                    i += 1;
                }
            },
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    out
}

/// The class starting at `pattern[start] == '['`, and the index after its `]`; `None` when it
/// is not closed. As in fnmatch: `!` first negates, a `]` first (after `!`) is a member, `a-z`
/// is a range.
fn class(pattern: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = pattern.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let first = i;
    let mut items = Vec::new();
    loop {
        let c = *pattern.get(i)?;
        if c == ']' && i > first {
            return Some((Token::Class { negated, items }, i + 1));
        }
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&e| e != ']') {
            items.push((c, pattern[i + 2]));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
}

fn fnmatch(pattern: &[char], path: &[char]) -> bool {
    let tokens = tokens(pattern);
    let one = |token: &Token, c: char| match token {
        Token::Any => true,
        Token::Literal(l) => *l == c,
        Token::Class { negated, items } => items.iter().any(|&(a, b)| a <= c && c <= b) != *negated,
        Token::Star => unreachable!("stars are handled by the caller"),
    };
    // Greedy matching with one backtrack point (the last star), linear in practice.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while p < path.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, p));
                t += 1;
            }
            Some(token) if one(token, path[p]) => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((st, sp)) => {
                    t = st + 1;
                    p = sp + 1;
                    star = Some((st, sp + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| matches!(token, Token::Star))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_fnmatch_does() {
        let yes = [
            ("*.safetensors", "model.safetensors"),
            ("*.safetensors", "sub/dir/model.safetensors"),
            ("*.json", "1_Pooling/config.json"),
            ("model-*-of-*.safetensors", "model-00001-of-00002.safetensors"),
            ("config.json", "config.json"),
            ("?odel.bin", "model.bin"),
            ("[mp]odel.bin", "podel.bin"),
            ("[!x]odel.bin", "model.bin"),
            ("[a-c]x", "bx"),
            ("[]]x", "]x"),
            ("onnx/", "onnx/model.onnx"),
            ("onnx/*", "onnx/deep/model.onnx"),
            ("*", ".gitattributes"),
            ("a[b", "a[b"),
            ("**", "x/y"),
            ("*q4_k_m*", "models/m-q4_k_m.gguf"),
        ];
        for (pattern, path) in yes {
            assert!(matches(pattern, path), "{pattern} should match {path}");
        }
        let no = [
            ("*.safetensors", "model.safetensors.index.json"),
            ("config.json", "1_Pooling/config.json"),
            ("?odel.bin", "mmodel.bin"),
            ("[!m]odel.bin", "model.bin"),
            ("onnx/", "onnx"),
            ("*.JSON", "config.json"),
            ("[a-c]x", "dx"),
            ("", "x"),
        ];
        for (pattern, path) in no {
            assert!(!matches(pattern, path), "{pattern} should not match {path}");
        }
    }

    #[test]
    fn without_include_everything_but_housekeeping_is_selected() {
        let all = Selection::default();
        assert!(all.is_default());
        assert!(all.selects("model.safetensors") && all.selects("sub/.gitattributes"));
        assert!(!all.selects(".gitattributes"));
        let named = Selection { include: vec![".gitattributes".into(), "*.json".into()], exclude: vec![] };
        assert!(named.selects(".gitattributes") && named.selects("config.json"));
        assert!(!named.selects("model.safetensors"));
        let excluded = Selection { include: vec![], exclude: vec!["*.bin".into(), "onnx/".into()] };
        assert!(excluded.selects("model.safetensors"));
        assert!(!excluded.selects("pytorch_model.bin") && !excluded.selects("onnx/model.onnx"));
        assert!(!excluded.selects(".gitattributes"));
        let both = Selection { include: vec!["*.json".into()], exclude: vec!["tokenizer*".into()] };
        assert!(both.selects("config.json") && !both.selects("tokenizer.json"));
    }
}
