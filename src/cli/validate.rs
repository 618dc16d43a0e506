//! `models-fetch validate [INDEX]`: every problem of an index file, like `ajv validate`, plus
//! the checks a schema cannot state; placeholder (stub) values are warnings unless denied.

use std::path::PathBuf;

use super::{Failure, Status};
use crate::index::{Entry, Index, IndexError, count};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The index file.
    #[arg(default_value = "index.json")]
    index: PathBuf,
    /// Treat entries that still hold placeholder values as errors.
    #[arg(long)]
    deny_stubs: bool,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let path = &args.index;
    let index = match Index::load(path) {
        Ok(index) => index,
        Err(IndexError::Invalid { problems, .. }) => {
            for problem in &problems {
                println!("{problem}");
            }
            println!("{} invalid: {}", path.display(), count(problems.len(), "problem"));
            return Ok(Status::Invalid);
        }
        Err(e @ (IndexError::Syntax { .. } | IndexError::TooLarge { .. })) => {
            println!("{e}");
            println!("{} invalid", path.display());
            return Ok(Status::Invalid);
        }
        Err(e) => return Err(e.into()),
    };
    let level = if args.deny_stubs { "error" } else { "warning" };
    let mut stub_entries = 0;
    for (i, entry, fields) in index.stubs() {
        stub_entries += 1;
        for field in fields {
            println!(
                "{level}: {}: /models/{i}{}{}: placeholder value ({}) [model {}]",
                path.display(),
                field.pointer,
                repo_file_label(entry, &field.pointer),
                field.reason,
                entry.id
            );
        }
    }
    let models = index.entries.len();
    if args.deny_stubs && stub_entries > 0 {
        println!(
            "{} invalid: {} of {}",
            path.display(),
            count(stub_entries, "stub entry"),
            count(models, "model")
        );
        return Ok(Status::Invalid);
    }
    let note = if stub_entries > 0 { " (stub entries are never deployed)" } else { "" };
    println!(
        "{} valid: {}, {}{note}",
        path.display(),
        count(models, "model"),
        count(stub_entries, "stub entry")
    );
    Ok(Status::Success)
}

/// ` (tokenizer.json)` for a pointer into `/artifact/files/N`, as index errors name a model
/// file; empty for any other pointer.
fn repo_file_label(entry: &Entry, pointer: &str) -> String {
    pointer
        .strip_prefix("/artifact/files/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| entry.artifact.files.as_ref()?.get(n))
        .map_or_else(String::new, |file| format!(" ({})", file.path))
}
