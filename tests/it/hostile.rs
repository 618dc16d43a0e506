//! Hostile input: names in the index that try to leave their directory, symlinks planted where
//! models-fetch writes, indexes and configs built to exhaust memory or the stack, bad token
//! files, and a second instance on the same cache. The promise: nothing is written or truncated
//! outside the cache and the store, no published name holds wrong bytes, memory stays bounded,
//! and each refusal is a clear error with the documented exit status.

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::{
    AJNA, Model, Pipes, Site, TOKEN, canonical, data, models_fetch_command, plan::plan, run_with_limit,
    signal, walk, wrapped,
};
use crate::origin::{Blob, Fault, Origin, Route, Rule};

/// Names in the site dir that are not the cache or the store.
fn outside(site: &Site, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(site.dir())
        .expect("site dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !["cache", "store", "token", "index.json", "config.toml"].contains(&name.as_str()))
        .filter(|name| !expected.contains(&name.as_str()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Names in the index.

/// One hostile change to a valid index entry, and the exit status it must end in.
struct BadEntry {
    what: &'static str,
    change: fn(&mut Value),
    /// 65: the index is invalid; 78: valid, but cannot be deployed.
    code: i32,
    /// Text the error must hold (a JSON pointer or a field name).
    names: &'static str,
}

fn bad_entries() -> Vec<BadEntry> {
    fn artifact(entry: &mut Value, field: &str, value: Value) {
        entry["artifact"][field] = value;
    }
    vec![
        BadEntry {
            what: "filename with .. segments",
            change: |e| artifact(e, "filename", "../../escape".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "absolute filename",
            change: |e| artifact(e, "filename", "/tmp/models-fetch-escape-abs".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename with NUL",
            change: |e| artifact(e, "filename", "model\0.safetensors".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename with backslashes",
            change: |e| artifact(e, "filename", "..\\..\\escape".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename with a newline",
            change: |e| artifact(e, "filename", "model\n.safetensors".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename of one dot",
            change: |e| artifact(e, "filename", ".".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename with an empty segment",
            change: |e| artifact(e, "filename", "a//b".into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename segment of 256 bytes",
            change: |e| artifact(e, "filename", "x".repeat(256).into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename of 4097 bytes",
            change: |e| artifact(e, "filename", format!("{}b", "a/".repeat(2048)).into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "filename of 1 MiB",
            change: |e| artifact(e, "filename", "y".repeat(1 << 20).into()),
            code: 65,
            names: "/models/0/artifact/filename",
        },
        BadEntry {
            what: "Hub path with .. segments",
            change: |e| artifact(e, "path", "../../../../escape".into()),
            code: 65,
            names: "/models/0/artifact/path",
        },
        BadEntry {
            what: "revision with .. segments",
            change: |e| artifact(e, "revision", "main/../../../escape".into()),
            code: 65,
            names: "/models/0/artifact/revision",
        },
        BadEntry {
            what: "repo with .. as its name",
            change: |e| artifact(e, "repo", "org/..".into()),
            code: 65,
            names: "/models/0/artifact/repo",
        },
        BadEntry {
            what: "repo climbing out",
            change: |e| artifact(e, "repo", "../../escape".into()),
            code: 65,
            names: "/models/0/artifact/repo",
        },
        BadEntry {
            what: "sha256 that is a path",
            change: |e| artifact(e, "sha256", "../../../../../../../../escape".into()),
            code: 65,
            names: "/models/0/artifact/sha256",
        },
        BadEntry {
            what: "id with .. ",
            change: |e| e["id"] = "../escape".into(),
            code: 65,
            names: "/models/0/id",
        },
        BadEntry {
            what: "id with a Cyrillic look-alike letter",
            change: |e| e["id"] = "\u{430}jna-insight-v2".into(),
            code: 65,
            names: "/models/0/id",
        },
        BadEntry {
            what: "id of 1000 characters",
            change: |e| e["id"] = "a".repeat(1000).into(),
            code: 65,
            names: "/models/0/id",
        },
        BadEntry {
            what: "downloadUrl whose Hub path climbs out (percent-encoded)",
            change: |e| {
                e["artifact"].as_object_mut().expect("artifact").remove("repo");
                artifact(
                    e,
                    "downloadUrl",
                    "http://127.0.0.1:9/o/n/resolve/main/..%2F..%2F..%2Fescape".into(),
                );
            },
            code: 78,
            names: "downloadUrl",
        },
        BadEntry {
            what: "downloadUrl that is a file URL",
            change: |e| {
                e["artifact"].as_object_mut().expect("artifact").remove("repo");
                artifact(e, "downloadUrl", "file:///etc/passwd".into());
            },
            code: 78,
            names: "downloadUrl",
        },
    ]
}

#[test]
fn hostile_names_in_the_index_are_refused_before_anything_is_written() {
    let site = Site::new();
    let blob = site.serve(AJNA, data(1, 4096));
    site.write_index(&[(AJNA, &blob)]);
    let mut failed = Vec::new();
    for bad in bad_entries() {
        let mut index = site.index(&[(AJNA, &blob)]);
        (bad.change)(&mut index["models"][0]);
        site.write_index_json(&index);
        let run = site.sync();
        let problems: Vec<String> = [
            (run.code != Some(bad.code)).then(|| format!("exit {:?}, expected {}", run.code, bad.code)),
            (!run.stderr.contains(bad.names)).then(|| format!("the error does not name {}", bad.names)),
            site.cache().exists().then(|| "the cache was created".to_owned()),
            site.store().exists().then(|| "the store was created".to_owned()),
            Path::new("/tmp/models-fetch-escape-abs")
                .exists()
                .then(|| "wrote /tmp/models-fetch-escape-abs".into()),
        ]
        .into_iter()
        .flatten()
        .chain(outside(&site, &[]).into_iter().map(|name| format!("wrote {name} outside")))
        .collect();
        if !problems.is_empty() {
            failed.push(format!("{}: {}\n{}", bad.what, problems.join("; "), run.out));
        }
    }
    assert!(site.origin().requests().is_empty(), "the origin was asked: {:#?}", site.origin().requests());
    assert!(
        failed.is_empty(),
        "{} hostile entries not refused as they should be:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn unicode_look_alike_file_names_are_plain_names_inside_the_models_directory() {
    const NAMES: [&str; 5] = [
        "..\u{2215}..\u{2215}escape.safetensors", // DIVISION SLASH, not a separator
        "\u{ff0e}\u{ff0e}/escape.safetensors",    // FULLWIDTH FULL STOPs as a folder
        "\u{2024}\u{2024}/escape.safetensors",    // ONE DOT LEADERs as a folder
        "model\u{202e}srotnesfas.exe",            // RIGHT-TO-LEFT OVERRIDE
        "mo\u{200b}del\u{feff}.safetensors",      // zero-width characters
    ];
    let site = Site::new();
    let store = |site: &Site| canonical(&site.store());
    for (i, name) in NAMES.iter().enumerate() {
        let model = Model { filename: name, ..AJNA };
        let blob = site.serve(model, data(i as u64 + 1, 8192));
        site.write_index(&[(model, &blob)]);
        site.sync().assert_ok();
        site.assert_published(model, &blob);
        let stored = site.stored(model);
        assert!(std::fs::symlink_metadata(&stored).is_ok(), "not published at its own name {name:?}");
        assert!(
            canonical(&stored).starts_with(canonical(&site.cache())),
            "{name:?} resolves outside the cache"
        );
        for path in walk(&site.store()) {
            let parent = canonical(path.parent().expect("parent"));
            assert!(parent.starts_with(store(&site)), "{} is outside the store", path.display());
        }
        site.assert_invariant(&format!("after publishing {name:?}"));
        assert_eq!(outside(&site, &[]), Vec::<String>::new(), "written outside for {name:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Symlinks planted where models-fetch writes.

/// A file outside the cache and the store that must never change.
struct Victim {
    path: PathBuf,
    content: Vec<u8>,
}

impl Victim {
    fn new(site: &Site, name: &str, content: Vec<u8>) -> Self {
        let path = site.path(name);
        std::fs::write(&path, &content).expect("victim");
        Victim { path, content }
    }

    fn assert_intact(&self, when: &str) {
        let now = std::fs::read(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()));
        assert!(
            now == self.content,
            "{when}: {} outside the cache was written through a planted symlink ({} bytes, was {})",
            self.path.display(),
            now.len(),
            self.content.len()
        );
    }
}

/// Version 1 published, version 2 in the index and on the Hub; `extra` config settings.
fn updating_site(size: usize, extra: &[(&str, toml::Value)]) -> (Site, Blob, Blob) {
    let site = Site::new();
    for (key, value) in extra {
        site.set(key, value.clone());
    }
    let v1 = site.published(AJNA, data(1, size));
    let v2 = site.serve(AJNA, data(2, size));
    site.write_index(&[(AJNA, &v2)]);
    (site, v1, v2)
}

fn plant(link: &Path, target: &Path) {
    std::fs::create_dir_all(link.parent().expect("parent")).expect("parent dir");
    let _ = std::fs::remove_file(link);
    symlink(target, link).unwrap_or_else(|e| panic!("plant {}: {e}", link.display()));
}

#[test]
fn symlink_at_the_partial_file_is_not_written_through() {
    let (site, _v1, v2) = updating_site(256 << 10, &[]);
    // Longer than the file: the engine would start over, truncating what the link points at.
    let victim = Victim::new(&site, "victim", b"precious ".repeat(64 << 10));
    plant(&site.paths(AJNA, &v2).partial(), &victim.path);
    let run = site.sync();
    victim.assert_intact("after the sync");
    site.assert_invariant("after the sync");
    if run.code == Some(0) {
        site.assert_published(AJNA, &v2);
    }
}

#[test]
fn symlink_at_the_partial_file_of_a_parallel_download_is_not_written_through() {
    let (site, _v1, v2) =
        updating_site(512 << 10, &[("chunk_size", "64KiB".into()), ("connections_per_file", 2.into())]);
    let victim = Victim::new(&site, "victim", b"precious ".repeat(1000));
    let sidecar_victim = Victim::new(&site, "sidecar-victim", b"{\"precious\": true}".to_vec());
    let paths = site.paths(AJNA, &v2);
    plant(&paths.partial(), &victim.path);
    plant(&paths.sidecar(), &sidecar_victim.path);
    let run = site.sync();
    victim.assert_intact("after the sync");
    sidecar_victim.assert_intact("after the sync");
    site.assert_invariant("after the sync");
    if run.code == Some(0) {
        site.assert_published(AJNA, &v2);
    }
}

#[test]
fn symlinks_at_published_names_are_replaced_not_followed() {
    let (site, _v1, v2) = updating_site(64 << 10, &[]);
    let paths = site.paths(AJNA, &v2);
    let victims: Vec<(PathBuf, Victim)> = [
        ("blob", paths.blob.clone()),
        ("snapshot", paths.snapshot(&v2.commit, AJNA.filename)),
        ("ref", paths.reference("main")),
        ("store", paths.store.clone()),
        ("chakra", paths.by_chakra()),
        ("stamp", paths.stamp()),
        ("state", paths.state()),
    ]
    .into_iter()
    .map(|(name, link)| {
        let victim = Victim::new(&site, &format!("victim-{name}"), format!("precious {name}\n").into_bytes());
        plant(&link, &victim.path);
        (link, victim)
    })
    .collect();
    site.sync().assert_ok();
    site.assert_published(AJNA, &v2);
    site.assert_invariant("after the sync");
    for (link, victim) in &victims {
        victim.assert_intact(&format!("{} planted as a link", link.display()));
    }
    // A daemon writes state.json and the metrics too.
    site.set("metrics_file", "metrics.prom");
    site.write_config();
    let metrics_victim = Victim::new(&site, "victim-metrics", b"precious metrics\n".to_vec());
    plant(&site.path("metrics.prom"), &metrics_victim.path);
    let log = site.path("daemon.log");
    let mut daemon = site.spawn_daemon("info", &log);
    let state = paths.state();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until both files are written (or the metrics went through the link, which fails below).
    while !std::fs::symlink_metadata(&state).is_ok_and(|m| m.is_file())
        || (std::fs::symlink_metadata(site.path("metrics.prom")).is_ok_and(|m| m.is_symlink())
            && std::fs::read(&metrics_victim.path).is_ok_and(|b| b == metrics_victim.content))
    {
        assert!(Instant::now() < deadline, "the daemon wrote no state or metrics:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&daemon, libc::SIGTERM);
    let _ = daemon.wait();
    for (link, victim) in &victims {
        victim.assert_intact(&format!("{} planted as a link, after the daemon", link.display()));
    }
    metrics_victim.assert_intact("metrics_file planted as a link");
}

#[test]
fn symlink_at_a_blob_name_to_the_right_bytes_outside_is_not_adopted() {
    let (site, _v1, v2) = updating_site(64 << 10, &[]);
    // Right bytes, but outside the cache, where someone else may change them after the check.
    let victim = Victim::new(&site, "victim", v2.content.to_vec());
    plant(&site.paths(AJNA, &v2).blob, &victim.path);
    site.sync().assert_ok();
    victim.assert_intact("after the sync");
    let meta = std::fs::symlink_metadata(site.paths(AJNA, &v2).blob).expect("blob");
    assert!(meta.is_file(), "the blob is still a link to a file outside the cache: {meta:?}");
    site.assert_invariant("after the sync");
}

#[test]
fn symlinked_model_directory_in_the_store_is_not_written_through() {
    let (site, _v1, v2) = updating_site(64 << 10, &[]);
    let elsewhere = site.path("elsewhere");
    std::fs::create_dir(&elsewhere).expect("elsewhere");
    let model_dir = site.paths(AJNA, &v2).model_dir();
    std::fs::remove_dir_all(&model_dir).expect("model dir");
    symlink(&elsewhere, &model_dir).expect("plant the dir link");
    let run = site.sync();
    let written: Vec<PathBuf> = walk(&elsewhere);
    assert!(
        written.is_empty(),
        "written through {} into {}: {written:?}\n{}",
        model_dir.display(),
        elsewhere.display(),
        run.out
    );
    site.assert_invariant("after the sync");
    if run.code == Some(0) {
        site.assert_published(AJNA, &v2);
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs built to exhaust memory or the stack.

/// A run's exit code (or the signal that ended it), output, peak RSS in KiB and time.
struct Measured {
    code: Option<i32>,
    signal: Option<i32>,
    out: String,
    max_rss_kib: i64,
    elapsed: Duration,
}

/// Forks and execs the command from a small Python process and reports the command's own
/// peak RSS. A child forked straight from this big, multi-threaded test process would start
/// with this process's RSS high-water mark (Linux carries it over at fork and exec), so its
/// `ru_maxrss` would measure the test harness, not models-fetch.
const MEASURE_PY: &str = "import os,sys,signal\npid=os.fork()\nif pid==0:\n    os.execvp(sys.argv[1],sys.argv[1:])\n_,st,ru=os.wait4(pid,0)\nsys.stderr.write('\\nMAXRSS_KIB=%d\\n'%ru.ru_maxrss)\nsys.stderr.flush()\nif os.WIFSIGNALED(st):\n    signal.signal(os.WTERMSIG(st),signal.SIG_DFL)\n    os.kill(os.getpid(),os.WTERMSIG(st))\nsys.exit(os.WEXITSTATUS(st))\n";

/// Runs `command` to its end (killed after `limit`), with an address-space limit of `as_limit`
/// bytes as a safety net, and measures its peak RSS.
#[allow(clippy::zombie_processes, reason = "the child is reaped by wait4")]
fn measured(original: Command, limit: Duration, as_limit: u64) -> Measured {
    let mut command = wrapped(&original, &["python3", "-c", MEASURE_PY]);
    command.process_group(0);
    // SAFETY: setrlimit is async-signal-safe; it only limits the child (and what it execs).
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit { rlim_cur: as_limit, rlim_max: as_limit };
            if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pipes = Pipes::take(&mut child);
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into a local we own.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            break;
        }
        if start.elapsed() > limit {
            // SAFETY: kill(2) on our own child's process group (it and what it forked).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (stdout, stderr) = pipes.join();
    let max_rss_kib = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("MAXRSS_KIB=").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(i64::MAX);
    let out = format!("{stdout}{stderr}");
    Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        out,
        max_rss_kib,
        elapsed: start.elapsed(),
    }
}

const GIB: u64 = 1 << 30;

#[test]
fn index_of_100_mb_is_refused_unread() {
    let site = Site::new();
    let blob = site.serve(AJNA, data(1, 4096));
    site.write_index(&[(AJNA, &blob)]);
    let file = std::fs::OpenOptions::new().write(true).open(site.path("index.json")).expect("index");
    file.set_len(100 << 20).expect("grow the index to 100 MB");
    let run = measured(site.command(&["sync"]), Duration::from_secs(30), 4 * GIB);
    assert_eq!((run.code, run.signal), (Some(65), None), "{}", run.out);
    assert!(run.out.contains("more than the 67108864 accepted"), "{}", run.out);
    assert!(run.max_rss_kib < 64 << 10, "peak RSS {} KiB to refuse a 100 MB index", run.max_rss_kib);
}

#[test]
fn index_of_60_mb_is_read_with_bounded_memory() {
    let site = Site::new();
    let blob = site.serve(AJNA, data(1, 4096));
    site.write_index(&[(AJNA, &blob)]);
    // Valid: STUBS_TO_REVISIT is a free-form object; one 60 MB string and 200 000 small keys.
    let mut index = site.index(&[(AJNA, &blob)]);
    let mut notes = serde_json::Map::new();
    notes.insert("long".into(), "n".repeat(56 << 20).into());
    for i in 0..200_000 {
        notes.insert(format!("k{i}"), i.into());
    }
    index["STUBS_TO_REVISIT"] = Value::Object(notes);
    site.write_index_json(&index);
    let size = std::fs::metadata(site.path("index.json")).expect("index").len();
    assert!(size > 58 << 20 && size < 64 << 20, "index of {size} bytes");
    let mut validate = models_fetch_command();
    validate.args(["validate", "index.json"]).current_dir(site.dir());
    let run = measured(validate, Duration::from_secs(60), 4 * GIB);
    assert_eq!((run.code, run.signal), (Some(0), None), "{}", run.out);
    eprintln!(
        "hostile: validate of a {size}-byte index: peak RSS {} MiB in {:?}",
        run.max_rss_kib >> 10,
        run.elapsed
    );
    assert!(
        run.max_rss_kib < 512 << 10,
        "peak RSS {} MiB for a {} MiB index",
        run.max_rss_kib >> 10,
        size >> 20
    );
    let run = measured(site.command(&["sync"]), Duration::from_secs(60), 4 * GIB);
    assert_eq!((run.code, run.signal), (Some(0), None), "{}", run.out);
    assert!(
        run.max_rss_kib < 512 << 10,
        "peak RSS {} MiB for a {} MiB index",
        run.max_rss_kib >> 10,
        size >> 20
    );
}

#[test]
fn deeply_nested_index_and_config_are_clear_errors_not_crashes() {
    let site = Site::new();
    let blob = site.serve(AJNA, data(1, 4096));
    site.write_index(&[(AJNA, &blob)]);
    let good_index = std::fs::read_to_string(site.path("index.json")).expect("index");
    let depth = 100_000;
    let cases = [
        ("arrays", format!("{{\"models\": {}{}}}", "[".repeat(depth), "]".repeat(depth))),
        ("objects", format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))),
        (
            "inside a valid index",
            good_index.replacen(
                "\"models\"",
                &format!(
                    "\"STUBS_TO_REVISIT\": {{\"x\": {}{}}}, \"models\"",
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
                1,
            ),
        ),
    ];
    for (what, text) in cases {
        std::fs::write(site.path("index.json"), text).expect("index");
        let run = measured(site.command(&["sync"]), Duration::from_secs(30), 4 * GIB);
        assert_eq!((run.code, run.signal), (Some(65), None), "nested {what}: {}", run.out);
        assert!(run.out.contains("recursion limit"), "nested {what}: {}", run.out);
    }
    std::fs::write(site.path("index.json"), good_index).expect("index");

    let config = std::fs::read_to_string(site.config()).expect("config");
    let cases = [
        ("arrays", format!("{config}x = {}1{}\n", "[".repeat(depth), "]".repeat(depth))),
        ("inline tables", format!("{config}x = {}1{}\n", "{a = ".repeat(depth), "}".repeat(depth))),
        ("dotted keys", format!("{config}{} = 1\n", vec!["a"; depth].join("."))),
    ];
    for (what, text) in cases {
        std::fs::write(site.config(), text).expect("config");
        let run = measured(site.command(&["sync"]), Duration::from_secs(30), 4 * GIB);
        assert_eq!((run.code, run.signal), (Some(78), None), "nested {what} in the config: {}", run.out);
    }
}

#[test]
fn index_that_never_ends_is_refused_with_bounded_memory() {
    let site = Site::new();
    let blob = site.serve(AJNA, data(1, 4096));
    site.write_index(&[(AJNA, &blob)]);
    std::fs::remove_file(site.path("index.json")).expect("index");
    symlink("/dev/zero", site.path("index.json")).expect("link /dev/zero");
    let run = measured(site.command(&["sync"]), Duration::from_secs(20), 2 * GIB);
    assert!(run.elapsed < Duration::from_secs(20), "still reading after {:?}", run.elapsed);
    assert_eq!(run.signal, None, "ended by signal {:?}:\n{}", run.signal, run.out);
    assert!(matches!(run.code, Some(65 | 66)), "exit {:?}:\n{}", run.code, run.out);
    assert!(run.max_rss_kib < 256 << 10, "peak RSS {} MiB", run.max_rss_kib >> 10);
}

// ---------------------------------------------------------------------------------------------
// The token file.

/// What to put at `token_file`.
#[derive(Debug, Clone, Copy)]
enum TokenFile {
    Directory,
    Empty,
    Missing,
    WorldReadable,
}

fn set_token_file(site: &Site, kind: TokenFile) {
    let path = site.path("token");
    let _ = std::fs::remove_file(&path);
    match kind {
        TokenFile::Directory => std::fs::create_dir(&path).expect("token dir"),
        TokenFile::Empty => std::fs::write(&path, " \n").expect("empty token"),
        TokenFile::Missing => {}
        TokenFile::WorldReadable => {
            std::fs::write(&path, format!("{TOKEN}\n")).expect("token");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .expect("chmod");
        }
    }
}

#[test]
fn bad_token_files_are_named_public_models_still_work_and_the_token_never_prints() {
    let cases = [
        (TokenFile::Directory, "is a directory"),
        (TokenFile::Empty, "is empty"),
        (TokenFile::Missing, "No such file"),
        (TokenFile::WorldReadable, "readable by every user"),
    ];
    for (kind, reason) in cases {
        // A public Hub: the model is fetched; the problem is a warning naming the file.
        let site = Site::with(Origin::start(None));
        set_token_file(&site, kind);
        let blob = site.serve(AJNA, data(1, 4096));
        site.write_index(&[(AJNA, &blob)]);
        let run = site.sync();
        run.assert_ok();
        site.assert_published(AJNA, &blob);
        let warned = run.stderr.lines().any(|l| l.contains("token") && l.contains(reason));
        assert!(warned, "{kind:?}: no warning naming the token file and {reason:?}:\n{}", run.out);

        // A private Hub: the failure names the model and the token file's problem.
        let site = Site::new();
        set_token_file(&site, kind);
        let blob = site.serve(AJNA, data(1, 4096));
        site.write_index(&[(AJNA, &blob)]);
        let run = site.sync();
        if matches!(kind, TokenFile::WorldReadable) {
            run.assert_ok();
        } else {
            run.assert_failed(&[65], AJNA.id, &[reason]);
            assert!(run.stderr.contains("no token was sent because token_file"), "{kind:?}:\n{}", run.out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A second instance.

#[test]
fn a_second_instance_on_the_same_cache_is_refused_while_the_first_finishes() {
    let site = Site::new();
    let blob = site.serve(AJNA, data(1, 1 << 20));
    site.write_index(&[(AJNA, &blob)]);
    site.origin()
        .add(Rule::once(Route::Cdn, Fault::Drip { chunk: 64 << 10, every: Duration::from_millis(100) }));
    let first = std::thread::spawn({
        let command = site.command(&["sync"]);
        move || run_with_limit(command, Duration::from_secs(30), &|| false)
    });
    let partial = site.paths(AJNA, &blob).partial();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !partial.exists() {
        assert!(Instant::now() < deadline, "the first sync never started its download");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The same config, and another config on the same cache with a store of its own.
    let second = site.sync();
    second.assert_failed(&[75], "another models-fetch", &["already using this cache"]);
    let other = site.config_with("other.toml", &[("store_dir", Some("other-store".into()))]);
    let mut command = models_fetch_command();
    command.args(["sync", "--config"]).arg(&other).current_dir(site.dir());
    let third = run_with_limit(command, Duration::from_secs(30), &|| false);
    third.assert_failed(&[75], "another models-fetch", &["already using this cache"]);
    let other_model_dir = plan(&other).expect("the other config's plan")[0].model_dir();
    assert!(!other_model_dir.exists(), "the refused instance published");

    let first = first.join().expect("first sync");
    first.assert_ok();
    site.assert_published(AJNA, &blob);
    site.assert_invariant("after both");
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), 1, "the file was fetched twice");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
