//! Bounded, typed reads: a FIFO, `/dev/zero` (through a symlink) or an oversized file where
//! models-fetch reads a file (the config, `ca_file`, the index, the token file, the state file,
//! a `file://` mirror's blob, a stamp, the lock) ends in a clear error that names the file and
//! what is wrong with it (the bound, for a file too large), within a second rather than a hang
//! or unbounded memory; or, for a mirror's blob, fails that origin and publishes from the next.
//! A hang is caught by the run's time limit (the process is killed and the test fails), never
//! by the suite hanging.

use std::path::Path;
use std::time::Duration;

use crate::fixture::{AJNA, Run, Site, data, run_with_limit, sha256_hex, unpublished};
use crate::origin::{Blob, Origin, Route};

/// Every run here ends well within this; a run killed at it was hanging.
const LIMIT: Duration = Duration::from_secs(20);

/// What is planted where a file is read.
#[derive(Debug, Clone, Copy)]
enum Bad {
    Fifo,
    /// A symlink to `/dev/zero`: endless bytes.
    DevZero,
    /// A regular (sparse) file of this many bytes.
    Oversized(u64),
}

impl Bad {
    /// What the error must say about it.
    fn reason(self) -> &'static str {
        match self {
            Bad::Fifo => "is a FIFO (named pipe), not a regular file",
            Bad::DevZero => "is a character device, not a regular file",
            Bad::Oversized(_) => "larger than",
        }
    }
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// Replaces whatever is at `path` with `bad` (folders created).
fn plant(path: &Path, bad: Bad) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("parent dir");
    let _ = std::fs::remove_file(path);
    match bad {
        Bad::Fifo => mkfifo(path),
        Bad::DevZero => std::os::unix::fs::symlink("/dev/zero", path).expect("link /dev/zero"),
        Bad::Oversized(len) => std::fs::File::create(path).and_then(|f| f.set_len(len)).expect("sparse file"),
    }
}

/// `models-fetch ARGS` of the site, killed at [`LIMIT`]; it must have ended by itself.
fn bounded_run(site: &Site, args: &[&str]) -> Run {
    let run = run_with_limit(site.command(args), LIMIT, &|| false);
    assert!(run.code.is_some(), "`{}` hung: killed after {:?}:\n{}", args.join(" "), run.elapsed, run.out);
    run
}

/// A line of stderr names `path` and says `reason`.
fn assert_named(run: &Run, path: &Path, reason: &str, what: &str) {
    let path = path.display().to_string();
    let named = run.stderr.lines().any(|line| line.contains(&path) && line.contains(reason));
    assert!(named, "{what}: no line of stderr names {path} and {reason:?}:\n{}", run.out);
}

/// `blob` is published at `model`'s store path (from a mirror: no Hub snapshot to check).
fn assert_stored(site: &Site, blob: &Blob) {
    let store = &site.paths(AJNA, blob).store;
    let bytes = std::fs::read(store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
    assert_eq!(sha256_hex(&bytes), blob.sha256, "{} has other content", store.display());
    assert!(site.temp_files().is_empty(), "temp files left: {:?}", site.temp_files());
}

/// An offline site whose index names [`AJNA`] with `content` (on no origin yet).
fn offline_with(content: Vec<u8>) -> (Site, Blob) {
    let site = Site::offline();
    site.set("max_retries", 0);
    let blob = unpublished(content);
    site.write_index(&[(AJNA, &blob)]);
    (site, blob)
}

#[test]
fn config_that_is_a_fifo_a_device_or_too_large_is_a_clear_error() {
    for bad in [Bad::Fifo, Bad::DevZero, Bad::Oversized((1 << 20) + 1)] {
        let (site, _) = offline_with(data(1, 4096));
        plant(&site.config(), bad);
        for command in ["plan", "sync", "status"] {
            let run = bounded_run(&site, &[command]);
            assert_eq!(run.code, Some(78), "{command} with {bad:?} as the config:\n{}", run.out);
            assert!(run.elapsed < Duration::from_secs(5), "{command}: {:?}", run.elapsed);
            assert_named(&run, &site.config(), "cannot read the config", &format!("{command}, {bad:?}"));
            assert!(run.stderr.contains(bad.reason()), "{command}, {bad:?}:\n{}", run.out);
        }
        if let Bad::Oversized(_) = bad {
            let run = bounded_run(&site, &["plan"]);
            assert!(run.stderr.contains("larger than 1 MiB (the limit for a config file)"), "{}", run.out);
        }
    }
}

#[test]
fn ca_file_that_is_a_fifo_a_device_or_too_large_is_a_clear_error() {
    for bad in [Bad::Fifo, Bad::DevZero, Bad::Oversized((16 << 20) + 1)] {
        let (site, _) = offline_with(data(1, 4096));
        site.set("ca_file", "ca.pem");
        site.write_config();
        plant(&site.path("ca.pem"), bad);
        let run = bounded_run(&site, &["sync"]);
        assert_eq!(run.code, Some(78), "sync with {bad:?} as the ca_file:\n{}", run.out);
        assert!(run.elapsed < Duration::from_secs(5), "sync: {:?}", run.elapsed);
        let reason = match bad {
            Bad::Oversized(_) => "larger than 16 MiB (the limit for a ca_file)",
            _ => bad.reason(),
        };
        assert_named(&run, &site.path("ca.pem"), reason, &format!("{bad:?}"));
        assert!(run.stderr.contains("ca_file"), "{bad:?}:\n{}", run.out);
    }
}

#[test]
fn index_that_is_a_fifo_a_device_or_too_large_is_a_clear_error() {
    for (bad, code) in [(Bad::Fifo, 66), (Bad::DevZero, 66), (Bad::Oversized((64 << 20) + 1), 65)] {
        let (site, _) = offline_with(data(1, 4096));
        let index = site.path("index.json");
        plant(&index, bad);
        for command in ["plan", "sync"] {
            let run = bounded_run(&site, &[command]);
            assert_eq!(run.code, Some(code), "{command} with {bad:?} as the index:\n{}", run.out);
            assert!(run.elapsed < Duration::from_secs(5), "{command}: {:?}", run.elapsed);
            let reason = match bad {
                Bad::Oversized(_) => "more than the 67108864 accepted (64 MiB, the limit for an index)",
                _ => bad.reason(),
            };
            assert_named(&run, &index, reason, &format!("{command}, {bad:?}"));
        }
    }
}

#[test]
fn token_file_that_is_a_fifo_a_device_or_too_large_leaves_public_models_working() {
    for bad in [Bad::Fifo, Bad::DevZero, Bad::Oversized(64 << 10)] {
        // A public Hub: the model is published; a warning says the token file is the problem.
        let site = Site::with(Origin::start(None));
        plant(&site.path("token"), bad);
        let blob = site.serve(AJNA, data(1, 4096));
        site.write_index(&[(AJNA, &blob)]);
        let run = site.sync();
        assert!(run.code.is_some(), "{bad:?}: sync hung:\n{}", run.out);
        run.assert_ok();
        assert!(run.elapsed < Duration::from_secs(10), "{bad:?}: {:?}", run.elapsed);
        site.assert_published(AJNA, &blob);
        let reason = match bad {
            Bad::Oversized(_) => "larger than 4 KiB (the limit for a token file)",
            _ => bad.reason(),
        };
        assert_named(&run, &site.path("token"), reason, &format!("{bad:?}"));
        assert!(
            run.stderr.contains("token_file"),
            "{bad:?}: the warning does not say token_file:\n{}",
            run.out
        );
        let sent = site.origin().requests().iter().filter(|r| r.header("authorization").is_some()).count();
        assert_eq!(sent, 0, "{bad:?}: a token was sent");

        // A private Hub: the model fails, and the failure says the token is why.
        let site = Site::new();
        plant(&site.path("token"), bad);
        let blob = site.serve(AJNA, data(1, 4096));
        site.write_index(&[(AJNA, &blob)]);
        let run = site.sync();
        run.assert_failed(&[65], AJNA.id, &["no token was sent because token_file"]);
        assert!(!site.origin().requests_to(Route::HubHead).is_empty(), "{bad:?}: the Hub was never asked");
    }
}

#[test]
fn state_file_that_is_a_fifo_a_device_or_too_large_is_named_and_wait_keeps_its_timeout() {
    for bad in [Bad::Fifo, Bad::DevZero, Bad::Oversized((64 << 20) + 1)] {
        let (site, _) = offline_with(data(1, 4096));
        let state = site.planned(AJNA.id).state();
        plant(&state, bad);
        let reason = match bad {
            Bad::Oversized(_) => "larger than 64 MiB (the limit for a state file)",
            _ => bad.reason(),
        };

        // status: the disk's view, and a warning naming the state file.
        let run = bounded_run(&site, &["status"]);
        assert_eq!(run.code, Some(0), "status with {bad:?} as the state file:\n{}", run.out);
        assert!(run.elapsed < Duration::from_secs(5), "status: {:?}", run.elapsed);
        assert_named(&run, &state, reason, &format!("status, {bad:?}"));
        assert!(run.out.contains(AJNA.id), "status does not show the model:\n{}", run.out);
        let run = run_with_limit(site.command(&["status", "--json"]), LIMIT, &|| false);
        let stdout = &run.out[..run.out.len() - run.stderr.len()];
        let json: serde_json::Value =
            serde_json::from_str(stdout).unwrap_or_else(|e| panic!("status --json: {e}:\n{}", run.out));
        let error = json["state_file_error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "status --json: state_file_error {error:?}");

        // wait --timeout 2s: times out on time (the model is on no origin), naming the file.
        let run = bounded_run(&site, &["wait", "--timeout", "2s"]);
        assert_eq!(run.code, Some(75), "wait with {bad:?} as the state file:\n{}", run.out);
        assert!(run.elapsed < Duration::from_secs(10), "wait --timeout 2s took {:?}", run.elapsed);
        assert!(run.stderr.contains("timed out after 2s"), "{}", run.out);
        assert_named(&run, &state, reason, &format!("wait, {bad:?}"));
    }
}

#[test]
fn mirror_blob_that_is_a_fifo_a_device_or_too_large_fails_that_mirror_and_the_next_serves() {
    let content = data(7, 64 << 10);
    for bad in [Bad::Fifo, Bad::DevZero, Bad::Oversized((64 << 10) + 1)] {
        let (site, blob) = offline_with(content.clone());
        site.set("mirrors", vec!["file://bad", "file://good"]);
        site.set("mirrors_first", true);
        site.write_config();
        let planted = site.path(&format!("bad/{}", blob.sha256));
        plant(&planted, bad);
        site.write(&format!("good/{}", blob.sha256), &content);
        let run = site.sync();
        assert!(run.code.is_some(), "{bad:?}: sync hung:\n{}", run.out);
        run.assert_ok();
        assert!(run.elapsed < Duration::from_secs(10), "{bad:?}: {:?}", run.elapsed);
        assert_stored(&site, &blob);
        let reason = match bad {
            Bad::Oversized(_) => "65537 bytes, but the file is 65536 bytes",
            _ => bad.reason(),
        };
        assert_named(&run, &planted, reason, &format!("{bad:?}"));
    }
}

#[test]
fn stamp_or_blob_that_is_a_fifo_is_hashed_or_fetched_again_and_a_fifo_lock_is_refused() {
    let content = data(8, 64 << 10);
    let (site, blob) = offline_with(content.clone());
    site.set("mirrors", vec!["file://mirror"]);
    site.write_config();
    site.write(&format!("mirror/{}", blob.sha256), &content);
    site.sync().assert_ok();
    let planned = site.paths(AJNA, &blob);

    // A FIFO at the stamp: no stamp, so the blob is hashed again and found good.
    plant(&planned.stamp(), Bad::Fifo);
    let run = bounded_run(&site, &["sync"]);
    run.assert_ok();
    assert_stored(&site, &blob);

    // A FIFO at the blob (and no stamp): never read; the file is fetched again.
    plant(&planned.blob, Bad::Fifo);
    let _ = std::fs::remove_file(planned.stamp());
    bounded_run(&site, &["sync"]).assert_ok();
    assert_stored(&site, &blob);

    // A FIFO at the lock: a clear error, not a hang.
    plant(&planned.lock(), Bad::Fifo);
    let run = bounded_run(&site, &["sync"]);
    assert_ne!(run.code, Some(0), "{}", run.out);
    assert_named(&run, &planned.lock(), Bad::Fifo.reason(), "a FIFO at the lock");
}
