//! Crash safety: `models-fetch run` is killed with SIGKILL at random moments while it downloads,
//! verifies and publishes three models (one streamed, two in parallel ranged chunks with a
//! sidecar), then started again, up to 50 times within a time budget. Whenever every model is
//! published, the index moves all three to a new version, so kills also land on updates of
//! published models. After every kill, and once in the middle of most runs, no published name
//! may hold wrong bytes ([`Site::violations`]). After the loop one last run must publish every
//! model at its latest version, verified, with no temp file left anywhere.
//!
//! The CDN drips (16 KiB every 15 ms) so a run takes about a second and a kill lands anywhere
//! in it. `MODELS_FETCH_CRASH_SEED` replays a sequence of kill times.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::fixture::{AJNA, ANAHATA, MANIPURA, Model, Site, data, sha256_hex, signal, terminate};
use crate::origin::{Blob, Fault, Route, Rule};

const MODELS: [Model; 3] = [AJNA, ANAHATA, MANIPURA];
/// Sizes: under two chunks (one stream), and two or three chunks of 256 KiB (parallel).
const SIZES: [usize; 3] = [384 << 10, 512 << 10, 704 << 10];
const ITERATIONS: usize = 50;
/// The loop stops early after this long.
const BUDGET: Duration = Duration::from_secs(50);
/// Longest a kill waits after the start.
const LONGEST_LIFE: Duration = Duration::from_millis(1500);

/// Whether `blob` is `model`'s published version, by the stable path's bytes (no panics).
fn is_published(site: &Site, model: Model, blob: &Blob) -> bool {
    std::fs::read(site.stored(model)).is_ok_and(|bytes| sha256_hex(&bytes) == blob.sha256)
}

fn kill(child: &mut Child) {
    signal(child, libc::SIGKILL);
    let _ = child.wait();
}

#[test]
fn sigkill_at_random_moments_never_publishes_wrong_bytes_and_the_next_run_finishes() {
    let seed =
        std::env::var("MODELS_FETCH_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
    eprintln!("crash loop: MODELS_FETCH_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let site = Site::new();
    site.set("chunk_size", "256KiB");
    site.set("connections_per_file", 2);
    site.set("stall_timeout", "5s");
    site.set("max_parallel_models", 3);
    site.origin()
        .add(Rule::always(Route::Cdn, Fault::Drip { chunk: 16 << 10, every: Duration::from_millis(15) }));
    let mut version = 1u64;
    let serve_all = |version: u64| -> Vec<Blob> {
        let blobs: Vec<Blob> = MODELS
            .iter()
            .zip(SIZES)
            .enumerate()
            .map(|(i, (model, size))| site.serve(*model, data(version * 10 + i as u64, size)))
            .collect();
        let pairs: Vec<(Model, &Blob)> = MODELS.iter().copied().zip(blobs.iter()).collect();
        site.write_index(&pairs);
        blobs
    };
    let mut blobs = serve_all(version);

    let started = Instant::now();
    let (mut kills, mut updates, mut mid_checks) = (0, 0, 0);
    let mut log = Vec::new();
    for i in 0..ITERATIONS {
        if started.elapsed() > BUDGET {
            break;
        }
        let life = Duration::from_micros(rng.u64(0..LONGEST_LIFE.as_micros() as u64));
        let log_path = site.path(&format!("run-{i}.log"));
        let mut daemon = site.spawn_daemon("info", &log_path);
        // Half-way through its life the invariant must already hold, while it runs.
        std::thread::sleep(life / 2);
        if life > Duration::from_millis(200) {
            site.assert_invariant(&format!("run {i}, {:?} after the start, while running", life / 2));
            mid_checks += 1;
        }
        std::thread::sleep(life - life / 2);
        let exited = daemon.try_wait().expect("try_wait");
        assert!(exited.is_none(), "run {i} exited by itself ({exited:?}):\n{}", read(&log_path));
        kill(&mut daemon);
        kills += 1;
        log.push(format!("run {i}: killed after {life:?}"));
        site.assert_invariant(&format!("after the kill of run {i} at {life:?} (seed {seed})"));
        let _ = std::fs::remove_file(&log_path);

        if MODELS.iter().zip(&blobs).all(|(model, blob)| is_published(&site, *model, blob)) {
            version += 1;
            updates += 1;
            blobs = serve_all(version);
            log.push(format!("run {i}: every model published; index moved to version {version}"));
        }
    }
    eprintln!(
        "crash loop: {kills} kills, {mid_checks} checks while running, {updates} updates in {:?}",
        started.elapsed()
    );
    assert!(kills >= 20, "only {kills} kills within the time budget");
    assert!(updates >= 1, "no run got every model published before its kill:\n{}", log.join("\n"));

    // The last run is left alone until every model is published.
    let log_path = site.path("last-run.log");
    let mut daemon = site.spawn_daemon("info", &log_path);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !MODELS.iter().zip(&blobs).all(|(model, blob)| is_published(&site, *model, blob)) {
        assert!(Instant::now() < deadline, "the run after the kills did not finish:\n{}", read(&log_path));
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&mut daemon, &log_path);
    for (model, blob) in MODELS.iter().zip(&blobs) {
        site.assert_published(*model, blob);
    }
    site.assert_invariant("after the last run");
    site.assert_no_secret_in(&read(&log_path), "the daemon's log");
    site.assert_cdn_never_got_the_token();
    // No partial file, sidecar or temp name of an atomic replacement is left: a run sweeps what
    // a killed one left.
    let temp = site.temp_files();
    assert!(
        temp.is_empty(),
        "temp files left after {kills} kills (seed {seed}): {temp:#?}\n{}",
        log.join("\n")
    );
}

/// A pid above the default pid_max: no such process.
const DEAD: u32 = 4_194_000;

/// `.{name}.{pid}.{n}.tmp` beside `path`: the temp name an atomic replacement of `path` by the
/// dead process [`DEAD`] left.
fn temp(path: &Path, n: u32) -> PathBuf {
    let name = path.file_name().expect("name").to_string_lossy();
    path.with_file_name(format!(".{name}.{DEAD}.{n}.tmp"))
}

/// What a run killed in the middle of an atomic replacement leaves (the crash loop found them):
/// the temp names `.{name}.{pid}.{n}.tmp` of the sidecar, a stamp, a ref and a store link, from
/// a pid that is gone. The next run owns the cache (the instance lock) and must remove them.
#[test]
fn stale_temp_names_from_a_killed_run_are_removed() {
    let site = Site::new();
    let blob = site.published(AJNA, data(1, 64 << 10));
    let paths = site.paths(AJNA, &blob);
    let leftovers = [
        temp(&paths.sidecar(), 0),
        temp(&paths.reference("main"), 1),
        temp(&paths.store, 2),
        temp(&paths.stamp(), 3),
    ];
    for path in &leftovers {
        std::fs::write(path, b"{\"half\":").expect("plant a leftover");
    }
    site.published(AJNA, data(2, 64 << 10));
    let left = site.temp_files();
    assert!(left.is_empty(), "temp names of a dead run left after the next run: {left:#?}");
}

/// The same for the state file the daemon keeps for `status` (`.models-fetch/state.json`): the
/// crash loop found `.state.json.{pid}.0.tmp` of a killed run after the last run had ended.
#[test]
fn stale_temp_name_of_the_state_file_is_removed() {
    let site = Site::new();
    let blob = site.published(AJNA, data(1, 64 << 10));
    let leftover = temp(&site.paths(AJNA, &blob).state(), 0);
    std::fs::write(&leftover, b"{\"half\":").expect("plant a leftover");
    let log = site.path("daemon.log");
    let mut daemon = site.spawn_daemon("info", &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while site.status()["daemon_pid"].is_null() {
        assert!(Instant::now() < deadline, "the daemon never wrote its state:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&mut daemon, &log);
    let left = site.temp_files();
    assert!(left.is_empty(), "temp names of a dead run left after the next run: {left:#?}");
}

/// A download cut short, then the index moves the model to another version: the partial file
/// of the version no longer indexed can never be resumed and must not stay forever.
#[test]
fn partial_of_a_version_no_longer_indexed_is_removed() {
    let site = Site::new();
    let v2 = site.serve(AJNA, data(2, 512 << 10));
    site.write_index(&[(AJNA, &v2)]);
    // Two answers cut after 100 KiB, then only 503s: the run fails with the bytes kept.
    site.origin().add(Rule::times(Route::Cdn, 2, Fault::ResetAfter(100 << 10)));
    site.origin().add(Rule::always(Route::Cdn, Fault::status(503, &[])));
    let run = site.sync();
    assert_ne!(run.code, Some(0), "{}", run.out);
    assert!(site.paths(AJNA, &v2).partial().exists(), "no partial file kept for the resume:\n{}", run.out);
    site.origin().heal();
    site.published(AJNA, data(3, 512 << 10));
    let left = site.temp_files();
    assert!(left.is_empty(), "partial files of versions no longer indexed: {left:#?}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
