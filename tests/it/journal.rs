//! `models-fetch run --log journald` against the real systemd-journald, read back with
//! `journalctl -o json`: structured fields per model, priorities, and no secret anywhere.
//!
//! journald runs without systemd as PID 1, isolated twice over: it is a journal namespace
//! instance (`systemd-journald NAMESPACE`: no kernel log, no syslog socket) started by
//! `unshare -m` in a private mount namespace where `/run`, `/var/log` and `/etc/systemd` are
//! fresh tmpfs mounts, with `/run/systemd` and `/var/log/journal` bound to a temp dir. The
//! daemon joins that mount namespace (`nsenter -m`), where `/run/systemd/journal/socket` (the
//! path tracing-journald always uses) links to the namespace's socket. Nothing of the host's
//! journal is read or written; journald is stopped when the test ends. Needs root and the
//! Debian `systemd` package (installed by `.ci/test`); `MODELS_FETCH_SKIP_JOURNAL=1` skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::daemon::{Daemon, Launch, SMALL, site};
use crate::fixture::{AJNA, ANAHATA, Site, TOKEN, data, is_root, temp_dir, text};
use crate::origin::{Fault, Route, Rule, SIGNATURE_MARKER};

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const NAMESPACE: &str = "models-fetch-test";

/// Run by `unshare -m` as `sh -c SCRIPT sh DIR NAMESPACE`; ends by becoming journald.
const SETUP_SCRIPT: &str = r#"set -e
dir=$1 namespace=$2
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/systemd /run/log
mount --bind "$dir/systemd" /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /var/log
mkdir /var/log/journal
mount --bind "$dir/journal" /var/log/journal
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd
cp "$dir/journald.conf" "/etc/systemd/journald@$namespace.conf"
exec "$3" "$namespace"
"#;

/// A journald of its own; one at a time (the tests of this module share the namespace name).
struct Journald {
    child: Child,
    dir: tempfile::TempDir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Journald {
    /// Starts journald, or `None` when `MODELS_FETCH_SKIP_JOURNAL` is set; fails the test with
    /// a hint when it cannot run here.
    fn start() -> Option<Self> {
        if std::env::var_os("MODELS_FETCH_SKIP_JOURNAL").is_some() {
            return None;
        }
        let hint = "run .ci/test (it installs Debian's systemd package), or set MODELS_FETCH_SKIP_JOURNAL=1 to skip the journald test";
        assert!(Path::new(JOURNALD).exists(), "{JOURNALD} not found: {hint}");
        for tool in ["journalctl", "unshare", "nsenter"] {
            let found = Command::new(tool).arg("--version").stdout(Stdio::null()).status().is_ok();
            assert!(found, "{tool} not found: {hint}");
        }
        assert!(is_root(), "the journald test mounts in a private mount namespace, which needs root: {hint}");

        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = temp_dir();
        let systemd = dir.path().join("systemd");
        std::fs::create_dir_all(systemd.join("journal")).expect("socket dir");
        std::fs::create_dir_all(dir.path().join("journal")).expect("journal dir");
        let socket = format!("/run/systemd/journal.{NAMESPACE}/socket");
        std::os::unix::fs::symlink(&socket, systemd.join("journal/socket")).expect("socket link");
        // Nothing dropped however fast the daemon logs at trace level.
        let config = "[Journal]\nStorage=persistent\nRateLimitIntervalSec=0\nRateLimitBurst=0\n";
        std::fs::write(dir.path().join("journald.conf"), config).expect("journald.conf");
        let output = std::fs::File::create(dir.path().join("journald.log")).expect("journald log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", SETUP_SCRIPT, "sh"])
            .arg(dir.path())
            .args([NAMESPACE, JOURNALD])
            .env("SYSTEMD_LOG_TARGET", "console")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log handle"))
            .stderr(output)
            .spawn()
            .expect("unshare runs");
        let mut journald = Journald { child, dir, _one_at_a_time: guard };
        let ready = systemd.join(format!("journal.{NAMESPACE}/socket"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            let exited = journald.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "systemd-journald did not start ({exited:?}):\n{}",
                journald.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(journald)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("journald.log")).unwrap_or_default()
    }

    /// The daemon is started through this: into journald's mount namespace.
    fn wrapper(&self) -> Vec<String> {
        ["nsenter", "--target", &self.child.id().to_string(), "--mount", "--"].map(String::from).to_vec()
    }

    /// `{dir}/journal/{machine-id}.{NAMESPACE}`, where journald keeps its files.
    fn files(&self) -> PathBuf {
        let suffix = format!(".{NAMESPACE}");
        std::fs::read_dir(self.dir.path().join("journal"))
            .expect("journal dir")
            .map(|e| e.expect("journal dir entry").path())
            .find(|p| p.to_string_lossy().ends_with(&suffix))
            .unwrap_or_else(|| panic!("journald wrote no journal\n{}", self.log()))
    }

    /// `journalctl -o json` of the whole journal: the text and each entry.
    fn read(&self) -> (String, Vec<Map<String, Value>>) {
        let output = Command::new("journalctl")
            .args(["--no-pager", "--output", "json", "--directory"])
            .arg(self.files())
            .output()
            .expect("journalctl runs");
        assert!(output.status.success(), "journalctl: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let entries = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(entry)) => entry,
                _ => panic!("journalctl printed {l:?}"),
            })
            .collect();
        (text, entries)
    }

    /// [`Journald::read`] once an entry satisfies `done` (journald writes asynchronously).
    fn read_until(&self, done: impl Fn(&Map<String, Value>) -> bool) -> (String, Vec<Map<String, Value>>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (text, entries) = self.read();
            if entries.iter().any(&done) {
                return (text, entries);
            }
            assert!(
                Instant::now() < deadline,
                "the journal never got the last event:\n{text}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(entry: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

fn number(entry: &Map<String, Value>, name: &str) -> Option<u64> {
    field(entry, name).and_then(|v| v.parse().ok())
}

#[test]
fn journal_has_model_fields_warning_priorities_and_no_secret() {
    let Some(journald) = Journald::start() else {
        eprintln!("MODELS_FETCH_SKIP_JOURNAL set: the journald test is skipped");
        return;
    };
    let site = site();
    // ajna-insight-v2 is published after an expired presigned URL and a reset (resumed);
    // anahata-heart-v1 fails: the CDN flips a byte.
    let good = site.serve(AJNA, data(1, 4 * SMALL));
    let bad = site.serve(ANAHATA, data(2, SMALL));
    site.origin().add(Rule::once(Route::Cdn, Fault::Expired).for_target(&good.sha256));
    site.origin().add(Rule::once(Route::Cdn, Fault::ResetAfter(300 << 10)).for_target(&good.sha256));
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(1000)).for_target(&bad.sha256));
    site.write_index(&[(AJNA, &good), (ANAHATA, &bad)]);
    let launch = Launch {
        notify: false,
        watchdog: None,
        log: "journald",
        level: "trace",
        wrapper: journald.wrapper(),
        env: vec![],
    };
    let mut daemon = Daemon::start_with(&site, &launch);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = site.status();
        let states: Vec<&Value> =
            status["models"].as_array().expect("models").iter().map(|m| &m["state"]).collect();
        if states == ["ready", "failed"] {
            break;
        }
        assert!(Instant::now() < deadline, "the models did not settle: {status:#}\n{}", daemon.report());
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.terminate();

    let (text, entries) =
        journald.read_until(|e| field(e, "MESSAGE").is_some_and(|m| m.starts_with("stopping")));
    // The whole journal, every field of every entry.
    assert!(!text.contains(TOKEN), "the token is in the journal:\n{text}");
    for secret in [SIGNATURE_MARKER, "X-Amz-Signature", "X-Amz-Algorithm"] {
        assert!(!text.contains(secret), "a presigned query ({secret}) is in the journal:\n{text}");
    }

    let ours: Vec<&Map<String, Value>> =
        entries.iter().filter(|e| field(e, "SYSLOG_IDENTIFIER") == Some("models-fetch")).collect();
    let dump = || ours.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join("\n");
    assert!(ours.iter().any(|e| field(e, "PRIORITY") == Some("7")), "no debug/trace event:\n{}", dump());
    for entry in &ours {
        let prefixed: Vec<&String> = entry.keys().filter(|k| k.starts_with("F_")).collect();
        assert!(prefixed.is_empty(), "fields with the F_ prefix {prefixed:?}: {entry:?}");
        if entry.contains_key("SHA256") || entry.contains_key("ERROR_KIND") {
            assert!(entry.contains_key("MODEL_ID"), "an event about a model without MODEL_ID: {entry:?}");
        }
    }

    let published = ours
        .iter()
        .find(|e| {
            field(e, "MODEL_ID") == Some(AJNA.id)
                && field(e, "MESSAGE").is_some_and(|m| m.starts_with("published"))
        })
        .unwrap_or_else(|| panic!("no publish event of {}:\n{}", AJNA.id, dump()));
    assert_eq!(field(published, "SHA256"), Some(good.sha256.as_str()), "{published:?}");
    let bytes = number(published, "BYTES").unwrap_or_else(|| panic!("no BYTES: {published:?}"));
    assert!(bytes >= good.size - (300 << 10) && bytes <= 2 * good.size, "BYTES={bytes}: {published:?}");
    assert!(number(published, "DURATION_MS").is_some(), "no DURATION_MS: {published:?}");
    let source = field(published, "SOURCE").unwrap_or_else(|| panic!("no SOURCE: {published:?}"));
    assert!(source.starts_with("hub ") && source.contains(AJNA.repo), "SOURCE={source}");
    // tracing-journald maps INFO to 5 (notice), DEBUG to 6, TRACE to 7.
    assert_eq!(number(published, "PRIORITY"), Some(5), "the publish event is not info: {published:?}");
    let resumed =
        ours.iter().any(|e| field(e, "MODEL_ID") == Some(AJNA.id) && field(e, "MESSAGE") == Some("resuming"));
    assert!(resumed, "no resuming event of {} (the reset was not resumed?):\n{}", AJNA.id, dump());

    let failed = ours
        .iter()
        .find(|e| {
            field(e, "MODEL_ID") == Some(ANAHATA.id)
                && field(e, "MESSAGE").is_some_and(|m| m.starts_with("failed"))
        })
        .unwrap_or_else(|| panic!("no failure event of {}:\n{}", ANAHATA.id, dump()));
    assert_eq!(field(failed, "ERROR_KIND"), Some("integrity"), "{failed:?}");
    assert!(
        number(failed, "PRIORITY").is_some_and(|p| p <= 4),
        "the failure is not a warning or worse: {failed:?}"
    );
    assert!(field(failed, "MESSAGE").is_some_and(|m| m.contains("checksum mismatch")), "{failed:?}");
    assert_eq!(field(failed, "SHA256"), Some(bad.sha256.as_str()), "{failed:?}");
}

/// Set in the test process that [`runs_log_to_stderr_when_the_tests_run_under_systemd`]
/// starts.
const UNDER_SYSTEMD: &str = "MODELS_FETCH_TEST_UNDER_SYSTEMD";

/// When the tests themselves run under systemd (a CI runner as a service), `JOURNAL_STREAM` is
/// in their environment and a journal listens: a `models-fetch` that inherited it would log to
/// the journal (`--log auto`), and every check of its stderr, the secret checks first, would
/// see nothing. The fixture's one scrub removes it. This test runs itself again as a child of
/// the test binary, inside a journald's mount namespace and with `JOURNAL_STREAM` set; there a
/// sync at debug level must log to stderr, while the same sync keeping `JOURNAL_STREAM` logs
/// to the journal (so the first check means something).
#[test]
fn runs_log_to_stderr_when_the_tests_run_under_systemd() {
    if std::env::var_os(UNDER_SYSTEMD).is_some() {
        assert!(std::env::var_os("JOURNAL_STREAM").is_some(), "started without JOURNAL_STREAM");
        let site = Site::new();
        let blob = site.serve(AJNA, data(1, SMALL));
        site.write_index(&[(AJNA, &blob)]);
        let logged = |stderr: &str| stderr.lines().any(|l| l.contains("DEBUG") && l.contains(AJNA.id));
        let run = site.sync_at(Some("debug"));
        run.assert_ok();
        assert!(logged(&run.stderr), "no debug line about {} on stderr:\n{}", AJNA.id, run.out);
        let mut inherited = site.command(&["sync"]);
        inherited
            .env("MODELS_FETCH_LOG", "debug")
            .env("JOURNAL_STREAM", std::env::var_os("JOURNAL_STREAM").unwrap());
        let output = inherited.output().expect("models-fetch sync runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!logged(&stderr), "with JOURNAL_STREAM, sync still logged to stderr:\n{stderr}");
        return;
    }
    let Some(journald) = Journald::start() else {
        eprintln!("MODELS_FETCH_SKIP_JOURNAL set: the journald test is skipped");
        return;
    };
    let test = "journal::runs_log_to_stderr_when_the_tests_run_under_systemd";
    let this = std::env::current_exe().expect("the test binary");
    let output = Command::new(&journald.wrapper()[0])
        .args(&journald.wrapper()[1..])
        .arg(this)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(UNDER_SYSTEMD, "1")
        // As systemd sets it for a service whose stderr is the journal: device and inode.
        .env("JOURNAL_STREAM", "8:4242")
        .stdin(Stdio::null())
        .output()
        .expect("the test binary runs");
    let out = text(&output);
    assert!(output.status.success() && out.contains("1 passed"), "the test under systemd failed:\n{out}");
}
