//! Slow, stuck and flaky servers (issue 11 §7): a trickle that beats `stall_timeout` is still
//! left by the minimum-rate guard, a stuck download does not keep the other models waiting, a
//! connection that resets every 100 KiB still finishes the file, a dead proxy is named, and a
//! stopped daemon's downloads show as interrupted.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, PATIENCE, all_ready, site as daemon_site, status_of};
use crate::fixture::{AJNA, ANAHATA, Site, data};
use crate::origin::{Blob, Fault, Route, Rule};

const SIZE: usize = 1 << 20;

/// 64 bytes every 300 ms: never silent for a whole `stall_timeout`, about 200 B/s.
fn trickle() -> Fault {
    Fault::Drip { chunk: 64, every: Duration::from_millis(300) }
}

/// A site whose transfers must reach 16 KiB/s over every second.
fn guarded(site: Site) -> Site {
    site.set("min_rate", "16KiB");
    site.set("min_rate_window", "1s");
    site
}

fn serve(site: &Site, content: Vec<u8>) -> Blob {
    let blob = site.serve(AJNA, content);
    site.write_index(&[(AJNA, &blob)]);
    blob
}

#[test]
fn a_trickle_that_beats_the_stall_timeout_is_left_and_resumed() {
    let site = guarded(Site::new());
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, trickle()));
    let run = site.sync();
    run.assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(
        run.out.contains("below min_rate"),
        "the log does not say why the transfer was left:\n{}",
        run.out
    );
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), 2, "one trickle, one good answer");
}

#[test]
fn without_the_guard_a_trickle_is_not_a_stall() {
    let site = Site::new();
    site.set("min_rate", "0");
    let blob = serve(&site, data(1, 8 << 10));
    // 64 B every 300 ms for 8 KiB: about 38 s; killed long before by the test's own limit.
    site.origin().add(Rule::once(Route::Cdn, Fault::Drip { chunk: 1024, every: Duration::from_millis(300) }));
    let run = site.sync();
    run.assert_ok();
    site.assert_published(AJNA, &blob);
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), 1, "min_rate = 0 left a slow transfer");
}

#[test]
fn resets_every_100_kib_still_finish_the_file_in_one_sync() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    // Ten answers are needed and max_retries is 3: only answers that advance the file may go on.
    site.origin().add(Rule::always(Route::Cdn, Fault::ResetAfter(100 << 10)));
    let run = site.sync();
    run.assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::Cdn).len() >= 10);
}

#[test]
fn a_source_that_never_advances_still_runs_out_of_retries() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::always(Route::Cdn, Fault::ResetAfter(0)));
    let run = site.sync();
    run.assert_refused(AJNA.id, &["reset", "broke", "connection"]);
    site.assert_not_published(AJNA, &blob);
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), 4, "max_retries = 3: four tries");
}

#[test]
fn a_dead_proxy_is_named_not_blamed_on_the_origin() {
    let site = Site::new();
    // Nothing listens on port 9 of the loopback.
    site.set("proxy", "http://127.0.0.1:9");
    site.set("max_retries", 0);
    let blob = serve(&site, data(1, 4096));
    let run = site.sync();
    run.assert_refused(AJNA.id, &["proxy http://127.0.0.1:9"]);
    site.assert_not_published(AJNA, &blob);
}

#[test]
fn a_trickling_model_does_not_keep_the_others_waiting() {
    let site = guarded(daemon_site());
    site.set("max_parallel_models", 1);
    let stuck = site.serve(AJNA, data(1, SIZE));
    let healthy = site.serve(ANAHATA, data(2, 64 << 10));
    site.origin().add(Rule::always(Route::Cdn, trickle()).for_target(&stuck.sha256));
    site.write_index(&[(AJNA, &stuck), (ANAHATA, &healthy)]);
    let daemon = Daemon::start(&site);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = site.status();
        if status_of(&status, ANAHATA)["state"] == "ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healthy model waited behind the stuck one: {status:#}\n{}",
            daemon.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    site.assert_published(ANAHATA, &healthy);
    assert!(!all_ready(
        &daemon.messages().last().and_then(|m| m.status().map(str::to_owned)).unwrap_or_default()
    ));
}

#[test]
fn a_stopped_daemon_shows_its_downloads_as_interrupted() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let site = daemon_site();
        let blob = serve(&site, data(1, 4 << 20));
        site.origin()
            .add(Rule::always(Route::Cdn, Fault::Drip { chunk: 64 << 10, every: Duration::from_millis(50) }));
        let mut daemon = Daemon::start(&site);
        let deadline = Instant::now() + PATIENCE;
        while status_of(&site.status(), AJNA)["state"] != "fetching" {
            assert!(Instant::now() < deadline, "never fetching\n{}", daemon.report());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.signal(signal);
        daemon.wait_exit(Duration::from_secs(10)).expect("the daemon exits");
        let status = site.status();
        assert_eq!(status_of(&status, AJNA)["state"], "interrupted", "after signal {signal}: {status:#}");
        let human = site.command(&["status"]).output().expect("status runs");
        let human = String::from_utf8_lossy(&human.stdout).into_owned();
        assert!(human.contains("interrupted") && !human.contains("fetching"), "{human}");
        site.assert_not_published(AJNA, &blob);
    }
}
