//! What changed between the pin an entry holds and a new one: the commit, files added, removed
//! or with other content, and the bytes; what `lock --update` prints.

use std::collections::BTreeMap;

use bytesize::ByteSize;

use super::PinnedFile;

/// The changes from one pin to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// The commit before (none when the entry had none) and after, when they differ.
    pub(crate) commit: Option<(Option<String>, String)>,
    pub(crate) added: Vec<PinnedFile>,
    pub(crate) removed: Vec<PinnedFile>,
    /// Same path, other sha256 or size: (before, after).
    pub(crate) changed: Vec<(PinnedFile, PinnedFile)>,
    /// Same content, a git blob id recorded or changed (`gitOid`): the paths.
    pub(crate) git_oids: Vec<String>,
    /// The primary file before and after, when it moved.
    pub(crate) primary: Option<(String, String)>,
    pub(crate) bytes_before: u64,
    pub(crate) bytes_after: u64,
}

/// The changes from `old` (at `old_commit`, primary `old_primary`) to `new`.
pub(crate) fn diff(
    old_commit: Option<&str>,
    old: &[PinnedFile],
    old_primary: &str,
    new_commit: &str,
    new: &[PinnedFile],
    new_primary: &str,
) -> Changes {
    let before: BTreeMap<&str, &PinnedFile> = old.iter().map(|f| (f.path.as_str(), f)).collect();
    let after: BTreeMap<&str, &PinnedFile> = new.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut changes = Changes {
        commit: (old_commit != Some(new_commit))
            .then(|| (old_commit.map(str::to_owned), new_commit.to_owned())),
        primary: (old_primary != new_primary).then(|| (old_primary.to_owned(), new_primary.to_owned())),
        bytes_before: old.iter().map(|f| f.size).sum(),
        bytes_after: new.iter().map(|f| f.size).sum(),
        ..Changes::default()
    };
    for (path, file) in &after {
        match before.get(path) {
            None => changes.added.push((*file).clone()),
            Some(old) if old.sha256 != file.sha256 || old.size != file.size => {
                changes.changed.push(((*old).clone(), (*file).clone()));
            }
            Some(old) if old.git_oid != file.git_oid => changes.git_oids.push((*path).to_owned()),
            Some(_) => {}
        }
    }
    changes.removed =
        before.iter().filter(|(p, _)| !after.contains_key(*p)).map(|(_, f)| (*f).clone()).collect();
    changes
}

impl Changes {
    /// Whether no file was added, removed or changed in content.
    pub(crate) fn same_files(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Bytes whose content is new: the files added and those changed, as a sync would fetch them.
    pub(crate) fn new_bytes(&self) -> u64 {
        self.added.iter().map(|f| f.size).sum::<u64>() + self.changed.iter().map(|(_, f)| f.size).sum::<u64>()
    }

    /// The report, one change a line, then a summary line.
    pub(crate) fn lines(&self) -> Vec<String> {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        let size = |n: u64| {
            if n < 1000 {
                format!("{n} bytes")
            } else {
                format!("{n} bytes ({})", ByteSize(n).display().si())
            }
        };
        let mut lines = Vec::new();
        if let Some((old, new)) = &self.commit {
            lines.push(format!("commit {} -> {new}", old.as_deref().unwrap_or("(none)")));
        }
        for f in &self.added {
            lines.push(format!("+ {} ({}, sha256 {})", f.path, size(f.size), short(&f.sha256)));
        }
        for f in &self.removed {
            lines.push(format!("- {} ({}, sha256 {})", f.path, size(f.size), short(&f.sha256)));
        }
        for (old, new) in &self.changed {
            let mut what = format!("sha256 {} -> {}", short(&old.sha256), short(&new.sha256));
            if old.size != new.size {
                what.push_str(&format!(", {} -> {} bytes", old.size, new.size));
            }
            lines.push(format!("~ {}: {what}", new.path));
        }
        for path in &self.git_oids {
            lines.push(format!("= {path}: same content, gitOid recorded"));
        }
        if let Some((old, new)) = &self.primary {
            lines.push(format!("primary file {old} -> {new}"));
        }
        let summary = if self.same_files() {
            "files unchanged".to_owned()
        } else {
            format!(
                "{} added, {} removed, {} changed",
                self.added.len(),
                self.removed.len(),
                self.changed.len()
            )
        };
        lines.push(format!(
            "{summary}; {} -> {} in all; {} new",
            size(self.bytes_before),
            size(self.bytes_after),
            size(self.new_bytes())
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha: char, size: u64, oid: Option<&str>) -> PinnedFile {
        PinnedFile {
            path: path.into(),
            sha256: sha.to_string().repeat(64),
            size,
            git_oid: oid.map(Into::into),
        }
    }

    #[test]
    fn added_removed_and_changed_files_are_told_apart() {
        let old = [
            file("config.json", 'a', 10, Some("1")),
            file("model.safetensors", 'b', 1000, None),
            file("vocab.txt", 'c', 5, Some("2")),
            file("tokenizer.json", 'd', 7, None),
        ];
        let new = [
            file("config.json", 'a', 10, Some("1")),
            file("model.safetensors", 'e', 1200, None),
            file("tokenizer.json", 'd', 7, Some("3")),
            file("special_tokens_map.json", 'f', 3, Some("4")),
        ];
        let changes = diff(Some("old"), &old, "model.safetensors", "new", &new, "model.safetensors");
        assert_eq!(changes.commit, Some((Some("old".into()), "new".into())));
        assert_eq!(changes.added, vec![new[3].clone()]);
        assert_eq!(changes.removed, vec![old[2].clone()]);
        assert_eq!(changes.changed, vec![(old[1].clone(), new[1].clone())]);
        assert_eq!(changes.git_oids, vec!["tokenizer.json".to_owned()]);
        assert_eq!(changes.primary, None);
        assert_eq!((changes.bytes_before, changes.bytes_after, changes.new_bytes()), (1022, 1220, 1203));
        assert!(!changes.same_files());
        let lines = changes.lines();
        assert_eq!(lines[0], "commit old -> new");
        assert!(
            lines.contains(
                &"~ model.safetensors: sha256 bbbbbbbbbbbb -> eeeeeeeeeeee, 1000 -> 1200 bytes".to_owned()
            ),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("+ special_tokens_map.json (3 bytes")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("- vocab.txt (5 bytes")), "{lines:?}");
        assert!(
            lines.last().unwrap()
                == "1 added, 1 removed, 1 changed; 1022 bytes (1.0 kB) -> 1220 bytes (1.2 kB) in all; 1203 bytes (1.2 kB) new",
            "{lines:?}"
        );
    }

    #[test]
    fn the_same_pin_has_no_changes() {
        let files = [file("a.gguf", 'a', 3, None)];
        let changes = diff(Some("c"), &files, "a.gguf", "c", &files, "a.gguf");
        assert_eq!(changes.commit, None);
        assert!(changes.same_files() && changes.git_oids.is_empty());
        assert_eq!(changes.lines(), ["files unchanged; 3 bytes -> 3 bytes in all; 0 bytes new"]);
    }

    #[test]
    fn a_new_commit_with_the_same_files_is_a_change_of_commit_only() {
        let files = [file("a.gguf", 'a', 3, None)];
        let changes = diff(None, &files, "a.gguf", "c2", &files, "a.gguf");
        assert_eq!(changes.commit, Some((None, "c2".into())));
        assert!(changes.same_files());
        assert_eq!(changes.lines()[0], "commit (none) -> c2");
    }
}
