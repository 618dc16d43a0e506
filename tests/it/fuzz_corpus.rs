//! The fuzz corpus replayed on the stable toolchain: every input kept in `fuzz/corpus/<target>/`
//! goes through the same property checks as the cargo-fuzz target of that name
//! (`fuzz/src/properties.rs`, compiled into this test). The inputs that found a bug are kept,
//! named for what they found, in `fuzz/regressions/<target>/`, and replayed the same way.

#[path = "../../fuzz/src/properties.rs"]
mod properties;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Replays every file under `dir/<target>/`; returns how many ran and the failures.
fn replay(dir: &Path) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failed = Vec::new();
    for (target, check) in properties::TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else { continue };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            ran += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failed.push(format!("{target}: {}: {message}", file.display()));
            }
        }
    }
    (ran, failed)
}

#[test]
fn fuzz_corpus_holds_every_property() {
    let (ran, failed) = replay(&crate::fixture::root().join("fuzz/corpus"));
    assert!(ran >= 5 * 5, "only {ran} corpus inputs found under fuzz/corpus");
    assert!(failed.is_empty(), "{} corpus inputs break a property:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn fuzz_regressions_hold_every_property() {
    let (ran, failed) = replay(&crate::fixture::root().join("fuzz/regressions"));
    assert!(ran > 0, "no regression input");
    assert!(
        failed.is_empty(),
        "{} of {ran} regression inputs break a property:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
