//! A full disk: `cache_dir` is a small tmpfs mounted by the test (root needed; CI runs as root;
//! `MODELS_FETCH_SKIP_DISKFULL=1` skips), unmounted when the test ends however it ends.
//!
//! - Room for the old version but not the new: `sync` refuses before downloading with a clear
//!   "not enough space" error and exit 74, the old version stays published and intact, no temp
//!   file is created; `models-fetch run` reports the failure and publishes the new version on
//!   its next re-check once the tmpfs is made bigger.
//! - A real ENOSPC from the file system (no inode left for the partial file): exit 74 naming
//!   the model and the OS error, old version intact, no temp file; the next sync after space
//!   returns publishes.
//! - Another writer fills the disk during a download: the download's space was reserved
//!   before it started, so its bytes still land; whatever fails after it (a link, the ref) is
//!   a clear error, no published name holds wrong bytes, and once space returns the next sync
//!   finishes without downloading the file again.
//! - A write that fails half-way (`RLIMIT_FSIZE` on the child: EFBIG, as EIO would; no tmpfs,
//!   no root needed): exit 74 with the OS error itself, not a receiver's "the writer stopped";
//!   the old version stays.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fixture::tmpfs::Tmpfs;
use crate::fixture::{AJNA, RUN_LIMIT, Site, data, run_with_limit, sha256_hex, terminate};
use crate::origin::{Fault, Route, Rule};

/// Fills the file system holding `dir` with files of `chunk` bytes until it is full; returns
/// the filler directory.
fn fill(dir: &Path, chunk: usize) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    std::fs::create_dir_all(&filler).expect("filler dir");
    let block = vec![0xa5u8; chunk];
    for n in 0.. {
        let Ok(mut file) = std::fs::File::create(filler.join(n.to_string())) else { break };
        if file.write_all(&block).and_then(|()| file.sync_all()).is_err() {
            break;
        }
    }
    filler
}

#[test]
fn no_room_for_the_new_version_keeps_the_old_and_the_daemon_recovers_when_space_returns() {
    let site = Site::new();
    let Some(tmpfs) = Tmpfs::mount(&site.cache(), "20m") else { return };
    // 2 MiB fit (the engine wants the file and a 16 MiB margin free); 3 MiB then do not.
    let v1 = site.published(AJNA, data(1, 2 << 20));

    let v2 = site.serve(AJNA, data(2, 3 << 20));
    site.write_index(&[(AJNA, &v2)]);
    let cdn_before = site.origin().requests_to(Route::Cdn).len();
    let run = site.sync();
    run.assert_failed(&[74], AJNA.id, &["not enough space"]);
    assert!(run.out.contains("free space, then run again"), "the error says what to do:\n{}", run.out);
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), cdn_before, "downloaded into a full disk");
    site.assert_published(AJNA, &v1);
    site.assert_not_published(AJNA, &v2);
    site.assert_invariant("after the refusal");
    assert!(site.temp_files().is_empty(), "temp files: {:?}", site.temp_files());

    // The service: the model fails with the reason, and is published once space returns.
    site.set("recheck_interval", "1s");
    site.write_config();
    let log = site.path("daemon.log");
    let mut daemon = site.spawn_daemon("info", &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = site.status();
        let model = &status["models"][0];
        if model["state"] == "failed" {
            let error = model["last_error"].as_str().unwrap_or_default();
            assert!(error.contains("not enough space"), "status does not say why: {status:#}");
            assert_eq!(model["error_kind"], "local", "{status:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not report the full disk: {status:#}\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    site.assert_published(AJNA, &v1);
    tmpfs.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read(site.stored(AJNA)).is_ok_and(|b| sha256_hex(&b) == v2.sha256) {
        assert!(Instant::now() < deadline, "not published after space returned:\n{}", read_log());
        site.assert_invariant("while the daemon recovers");
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut daemon, &log);
    site.assert_published(AJNA, &v2);
    site.assert_invariant("after the recovery");
    assert!(site.temp_files().is_empty(), "temp files: {:?}", site.temp_files());
    site.assert_no_secret_in(&read_log(), "the daemon's log");
    drop(tmpfs);
}

#[test]
fn enospc_from_the_file_system_is_a_clear_local_error_and_the_old_version_stays() {
    let site = Site::new();
    // Few inodes, so they run out long before the bytes do.
    let Some(tmpfs) = Tmpfs::mount(&site.cache(), "24m,nr_inodes=256") else { return };
    let v1 = site.published(AJNA, data(1, 256 << 10));
    let v2 = site.serve(AJNA, data(2, 256 << 10));
    site.write_index(&[(AJNA, &v2)]);
    // Every inode taken (tiny files), so bytes are free but no file can be created: the space
    // check passes and the file system says ENOSPC.
    let filler = fill(&site.cache(), 0);
    let run = site.sync();
    run.assert_failed(&[74], AJNA.id, &["no space left on device", "os error 28"]);
    site.assert_published(AJNA, &v1);
    site.assert_not_published(AJNA, &v2);
    site.assert_invariant("after ENOSPC");
    assert!(site.temp_files().is_empty(), "temp files: {:?}", site.temp_files());

    std::fs::remove_dir_all(&filler).expect("free the inodes");
    site.sync().assert_ok();
    site.assert_published(AJNA, &v2);
    site.assert_invariant("after space returned");
    drop(tmpfs);
}

#[test]
fn disk_filled_by_another_writer_during_a_download_never_breaks_a_published_name() {
    let site = Site::new();
    let Some(tmpfs) = Tmpfs::mount(&site.cache(), "24m") else { return };
    let v1 = site.published(AJNA, data(1, 1 << 20));
    let v2 = site.serve(AJNA, data(2, 1 << 20));
    site.write_index(&[(AJNA, &v2)]);
    // 1 MiB in 16 pieces 60 ms apart: the disk is filled while it downloads.
    site.origin()
        .add(Rule::once(Route::Cdn, Fault::Drip { chunk: 64 << 10, every: Duration::from_millis(60) }));
    let partial = site.paths(AJNA, &v2).partial();
    let cache = site.cache();
    let filler = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !partial.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        fill(&cache, 64 << 10)
    });
    let run = site.sync();
    let filler = filler.join().expect("filler thread");
    eprintln!("diskfull: the sync while the disk filled up ended with {:?}", run.code);
    site.assert_invariant("after the run on a full disk");
    if run.code == Some(0) {
        site.assert_published(AJNA, &v2);
    } else {
        // The bytes had their reserved room; only what came after may fail, and clearly.
        run.assert_failed(&[74], AJNA.id, &["no space left on device", "os error 28", "space"]);
        assert!(
            std::fs::read(site.stored(AJNA)).is_ok_and(|b| {
                let sha = sha256_hex(&b);
                sha == v1.sha256 || sha == v2.sha256
            }),
            "the store link gives neither version"
        );
    }
    let cdn_before = site.origin().requests_to(Route::Cdn).len();
    std::fs::remove_dir_all(&filler).expect("free the space");
    site.sync().assert_ok();
    site.assert_published(AJNA, &v2);
    site.assert_invariant("after space returned");
    assert!(site.temp_files().is_empty(), "temp files: {:?}", site.temp_files());
    let cdn = &site.origin().requests_to(Route::Cdn)[cdn_before..];
    assert!(cdn.is_empty(), "the file was downloaded again though its bytes were on disk: {cdn:#?}");
    drop(tmpfs);
}

#[test]
fn a_write_error_half_way_is_reported_as_itself_and_the_old_version_stays() {
    use std::os::unix::process::CommandExt;
    let site = Site::new();
    let v1 = site.published(AJNA, data(1, 256 << 10));
    // 24 MiB over one stream, several times the sink's buffers; the writer fails at 2 MiB, as
    // with EIO or a full disk past the reservation.
    let v2 = site.serve(AJNA, data(2, 24 << 20));
    site.write_index(&[(AJNA, &v2)]);
    let mut command = site.command(&["sync"]);
    // SAFETY: async-signal-safe calls only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit { rlim_cur: 2 << 20, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let run = run_with_limit(command, RUN_LIMIT, &|| false);
    run.assert_failed(&[74], AJNA.id, &["file too large (os error 27)"]);
    assert!(!run.stderr.contains("the writer stopped"), "the cause is lost:\n{}", run.out);
    site.assert_kept(AJNA, &v1);
    site.assert_not_published(AJNA, &v2);
    site.assert_invariant("after the write error");
}
