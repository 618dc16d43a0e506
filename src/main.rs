//! The `models-fetch` command; everything but the process setup is `models_fetch::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A closed stdout (`models-fetch plan | head`) ends the process quietly, as for other
    // Unix tools, instead of a panic in println!.
    // SAFETY: called first thing, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    models_fetch::run()
}
