//! The `models-fetch` command: parse the arguments, run the subcommand, map the outcome to an
//! exit status (sysexits, see `cli::Status`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A closed stdout (`models-fetch plan | head`) ends the process quietly, as for other
    // Unix tools, instead of a panic in println!.
    // SAFETY: called first thing, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = models_fetch::cli::Cli::parse();
    match cli.run() {
        Ok(status) => status.into(),
        Err(failure) => {
            eprintln!("models-fetch: {failure:#}");
            failure.status().into()
        }
    }
}
