//! No import cycle between the top-level modules of `src/` (fetch, sink, verify, plan, layout,
//! publish, sync, report, daemon, ...): each file's `crate::name` paths (in `use` lines and
//! inline) and, in a top-level module's own file, its `super::name` paths are read as an edge
//! from the module to `name`; every edge must point down a graph without cycles. `cli` and
//! `main` are the glue on top and are left out, as is `lib.rs`, which only declares the modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use walkdir::WalkDir;

/// Edges of a cycle being cut on another branch, ignored until it lands: each must still exist
/// (delete it here once it does not).
const ALLOWED: &[(&str, &str)] = &[];

/// Modules left out of the graph: the command-line glue and the binary.
const LEAVES: &[&str] = &["cli", "main"];

type Edges = BTreeSet<(String, String)>;

/// The top-level module a file of `src/` belongs to, and whether the file is that module's own
/// (`src/x.rs`, `src/x/mod.rs`: there `super::` is the crate).
fn module_of(relative: &Path) -> Option<(String, bool)> {
    let mut parts = relative.iter().map(|p| p.to_string_lossy().into_owned());
    let first = parts.next()?;
    let rest: Vec<String> = parts.collect();
    if rest.is_empty() {
        let name = first.strip_suffix(".rs")?.to_owned();
        return (name != "lib").then_some((name, true));
    }
    Some((first, rest == ["mod.rs"]))
}

/// The code of `text` without its comments (line comments, doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // `//` inside a string (a URL) is rare in src/ and only ever after the code that matters.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment after each `prefix` (`crate::`, `super::`), with each name of a
/// `prefix{a, b::c}` group.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut names = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = code[at + prefix.len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push(ident(item.trim()));
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// Every edge between top-level modules that `files` (path under `src/`, text) make.
fn edges(files: &[(String, String)]) -> Edges {
    let modules: BTreeSet<String> =
        files.iter().filter_map(|(path, _)| module_of(Path::new(path))).map(|(m, _)| m).collect();
    let mut edges = Edges::new();
    for (path, text) in files {
        let Some((from, own)) = module_of(Path::new(path)) else { continue };
        let code = code(text);
        let mut names = names_after(&code, "crate::");
        if own {
            names.extend(names_after(&code, "super::"));
        }
        for to in names {
            if to != from && modules.contains(&to) {
                edges.insert((from.clone(), to));
            }
        }
    }
    edges
}

/// The cycles of the graph: each strongly connected part of more than one module, as its
/// members and the edges between them.
fn cycles(edges: &Edges) -> Vec<String> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        next.entry(from).or_default().push(to);
    }
    let reachable = |from: &str| -> BTreeSet<&str> {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![from]);
        while let Some(at) = stack.pop() {
            for &n in next.get(at).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&str> = edges.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect();
    let reach: BTreeMap<&str, BTreeSet<&str>> = nodes.iter().map(|&n| (n, reachable(n))).collect();
    let parts: BTreeSet<Vec<&str>> = nodes
        .iter()
        .map(|&n| {
            nodes
                .iter()
                .copied()
                .filter(|&m| m == n || (reach[n].contains(m) && reach[m].contains(n)))
                .collect()
        })
        .filter(|part: &Vec<&str>| part.len() > 1)
        .collect();
    parts
        .iter()
        .map(|part| {
            let inside: Vec<String> = edges
                .iter()
                .filter(|(a, b)| part.contains(&a.as_str()) && part.contains(&b.as_str()))
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            format!("{{{}}}: {}", part.join(", "), inside.join(", "))
        })
        .collect()
}

fn src_files() -> Vec<(String, String)> {
    let src = crate::fixture::root().join("src");
    WalkDir::new(&src)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.expect("src/ is readable"))
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            let relative = e.path().strip_prefix(&src).expect("beneath src/").to_string_lossy().into_owned();
            (relative, std::fs::read_to_string(e.path()).expect("a source file"))
        })
        .collect()
}

#[test]
fn no_import_cycle_between_the_modules_of_src() {
    let all = edges(&src_files());
    assert!(all.contains(&("sync".into(), "fetch".into())), "the parser found no edges: {all:?}");
    let stale: Vec<String> = ALLOWED
        .iter()
        .filter(|(from, to)| !all.contains(&((*from).to_owned(), (*to).to_owned())))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(stale.is_empty(), "allowed edges that no longer exist, delete them from ALLOWED: {stale:?}");
    let kept: Edges = all
        .into_iter()
        .filter(|(from, to)| {
            !LEAVES.contains(&from.as_str())
                && !LEAVES.contains(&to.as_str())
                && !ALLOWED.contains(&(from.as_str(), to.as_str()))
        })
        .collect();
    let cycles = cycles(&kept);
    assert!(cycles.is_empty(), "import cycles between the modules of src/:\n  {}", cycles.join("\n  "));
}

/// The checker itself: grouped and inline paths, `super::` in a module's own file, comments.
#[test]
fn the_checker_finds_cycles_however_the_import_is_written() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let files = [
        file("a.rs", "use crate::{b::{X, Y}, c};\n"),
        file("b/mod.rs", "use super::c::Z;\n"),
        file("b/inner.rs", "use super::Local; // not crate::a\n"),
        file("c.rs", "fn f() { let _ = crate::a::g(); }\n/// crate::d in a comment\n"),
        file("d.rs", ""),
        file("lib.rs", "pub use crate::a::g;\n"),
    ];
    let found = edges(&files);
    let expected: Edges = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "a")]
        .iter()
        .map(|(f, t)| ((*f).into(), (*t).into()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(cycles(&found), ["{a, b, c}: a -> b, a -> c, b -> c, c -> a"]);
    let acyclic: Edges = found.into_iter().filter(|(f, _)| f != "c").collect();
    assert!(self::cycles(&acyclic).is_empty());
}
