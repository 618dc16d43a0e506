//! `models-fetch run` as systemd runs it: the notify protocol read from a real datagram socket
//! (`NOTIFY_SOCKET`), the watchdog (`WATCHDOG_USEC`, `WATCHDOG_PID` set to the daemon's own pid
//! as systemd does), SIGHUP reloads, SIGTERM, the exit statuses before READY, and the
//! `status`, `wait` and metrics views of a running daemon. Downloads come from the test origin
//! (`origin.rs`), slowed down where a test needs a transfer in flight.

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::fixture::{AJNA, ANAHATA, Site, TOKEN, data, text, unpublished, wrapped, write};
use crate::origin::{Blob, Fault, Host, Route, Rule};

/// The file served slowly: a few MiB.
const BIG: usize = 4 << 20;
/// A file fetched at once.
pub const SMALL: usize = 256 << 10;
/// `WATCHDOG_USEC` of the tests: the daemon must ping at least this often.
const WATCHDOG: Duration = Duration::from_millis(400);
/// How long any wait of these tests may take before it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The CDN sends 64 KiB every 50 ms: [`BIG`] takes 3.2 s, and never 1 s without a byte.
fn drip() -> Fault {
    Fault::Drip { chunk: 64 << 10, every: Duration::from_millis(50) }
}

/// A [`Site`] for the daemon: its defaults, with a stall timeout of 5 s.
pub fn site() -> Site {
    let site = Site::new();
    site.set("stall_timeout", "5s");
    site
}

/// Requests for `blob` on the CDN.
fn cdn_gets(site: &Site, blob: &Blob) -> Vec<crate::origin::Request> {
    site.origin().requests_to(Route::Cdn).into_iter().filter(|r| r.path().ends_with(&blob.sha256)).collect()
}

/// The row of `model` in `status --json`.
pub fn status_of(status: &serde_json::Value, model: crate::fixture::Model) -> &serde_json::Value {
    status["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["id"] == model.id))
        .unwrap_or_else(|| panic!("{} not in status --json: {status:#}", model.id))
}

/// One datagram the daemon sent to `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct Message {
    pub at: Instant,
    pub text: String,
}

impl Message {
    /// Whether the message has this exact line (`READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of `KEY=` in the message.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    pub fn status(&self) -> Option<&str> {
        self.get("STATUS")
    }
}

type Log = Arc<(Mutex<Vec<Message>>, Condvar)>;

/// A bound `NOTIFY_SOCKET` and a thread collecting what arrives on it.
pub struct Notify {
    pub path: PathBuf,
    log: Log,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Notify {
    pub fn bind(path: PathBuf) -> Self {
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let (messages, arrived) = &*log;
                        messages.lock().expect("notify log").push(Message { at: Instant::now(), text });
                        arrived.notify_all();
                    }
                }
            })
        };
        Notify { path, log, stop, reader: Some(reader) }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.log.0.lock().expect("notify log").clone()
    }

    /// The index of the first message from `from` on that satisfies `matches`, waiting up to
    /// `limit` for it.
    fn wait_for(&self, from: usize, limit: Duration, matches: &dyn Fn(&Message) -> bool) -> Option<usize> {
        let deadline = Instant::now() + limit;
        let (messages, arrived) = &*self.log;
        let mut messages = messages.lock().expect("notify log");
        loop {
            if let Some(at) = messages.iter().skip(from).position(matches) {
                return Some(from + at);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            messages = arrived.wait_timeout(messages, left).expect("notify log").0;
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// How to start a daemon.
pub struct Launch {
    /// Bind a `NOTIFY_SOCKET` for it.
    pub notify: bool,
    /// `WATCHDOG_USEC`, with `WATCHDOG_PID` the daemon's pid.
    pub watchdog: Option<Duration>,
    /// `--log` target.
    pub log: &'static str,
    /// `MODELS_FETCH_LOG`.
    pub level: &'static str,
    /// A command the daemon is started through (`nsenter ...`), which must `exec` it.
    pub wrapper: Vec<String>,
    /// More environment variables.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            notify: true,
            watchdog: Some(WATCHDOG),
            log: "stderr",
            level: "debug",
            wrapper: vec![],
            env: vec![],
        }
    }
}

/// A running `models-fetch run`; killed (SIGKILL) if the test ends while it runs.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    /// stdout and stderr.
    output: PathBuf,
    pub notify: Option<Notify>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    pub fn start(site: &Site) -> Self {
        Self::start_with(site, &Launch::default())
    }

    pub fn start_with(site: &Site, launch: &Launch) -> Self {
        static DAEMONS: AtomicUsize = AtomicUsize::new(0);
        let n = DAEMONS.fetch_add(1, Ordering::Relaxed);
        let notify = launch.notify.then(|| Notify::bind(site.path(&format!("notify-{n}.sock"))));
        let output = site.path(&format!("daemon-{n}.log"));
        let file = File::create(&output).expect("daemon log");
        let mut command = site.command(&["--log", launch.log, "run"]);
        command.env("MODELS_FETCH_LOG", launch.level);
        if let Some(notify) = &notify {
            command.env("NOTIFY_SOCKET", &notify.path);
        }
        if let Some(watchdog) = launch.watchdog {
            command.env("WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        // As systemd does: WATCHDOG_PID is the service's own pid, known only once it runs.
        let mut prefix: Vec<&str> = launch.wrapper.iter().map(String::as_str).collect();
        if launch.watchdog.is_some() && !launch.env.iter().any(|(k, _)| *k == "WATCHDOG_PID") {
            prefix.extend(["sh", "-c", "export WATCHDOG_PID=$$; exec \"$0\" \"$@\""]);
        }
        let mut command = if prefix.is_empty() { command } else { wrapped(&command, &prefix) };
        command.stdout(file.try_clone().expect("log handle")).stderr(file);
        let started = Instant::now();
        let child = command.spawn().expect("models-fetch run starts");
        Daemon { pid: child.id(), child, started, output, notify, exited: None }
    }

    /// What the daemon printed, and every notify message: for failure messages.
    pub fn report(&self) -> String {
        let log = std::fs::read_to_string(&self.output).unwrap_or_default();
        let messages: Vec<String> = self.notify.as_ref().map_or_else(Vec::new, |n| {
            n.messages()
                .iter()
                .map(|m| format!("  +{:?} {:?}", m.at.duration_since(self.started), m.text))
                .collect()
        });
        format!("notify messages:\n{}\ndaemon output:\n{log}", messages.join("\n"))
    }

    pub fn messages(&self) -> Vec<Message> {
        self.notify.as_ref().expect("a notify socket").messages()
    }

    /// Waits for the first message from index `from` on that satisfies `matches`; fails the
    /// test, naming `what`, when none comes within `limit`.
    pub fn expect(
        &self,
        from: usize,
        limit: Duration,
        what: &str,
        matches: impl Fn(&Message) -> bool,
    ) -> (usize, Message) {
        let notify = self.notify.as_ref().expect("a notify socket");
        match notify.wait_for(from, limit, &matches) {
            Some(at) => (at, notify.messages()[at].clone()),
            None => panic!("no {what} within {limit:?}\n{}", self.report()),
        }
    }

    /// Waits for a `STATUS=` satisfying `matches`.
    pub fn expect_status(
        &self,
        from: usize,
        limit: Duration,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> (usize, Message) {
        self.expect(from, limit, what, |m| m.status().is_some_and(&matches))
    }

    /// SIGHUP after message `from`, then READY=1 and a STATUS with every model ready.
    pub fn reload_until_all_ready(&self, from: usize) {
        self.signal(libc::SIGHUP);
        let (reloaded, _) =
            self.expect(from, Duration::from_secs(5), "READY=1 after the reload", |m| m.has("READY=1"));
        self.expect_status(
            reloaded,
            Duration::from_secs(5),
            "STATUS all models ready after the reload",
            all_ready,
        );
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid");
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.exited()
    }

    /// SIGTERM; asserts a clean exit within 5 s and returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(10));
        let took = sent.elapsed();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "exit after SIGTERM: {status:?}\n{}",
            self.report()
        );
        assert!(took < Duration::from_secs(5), "SIGTERM took {took:?} to stop the daemon\n{}", self.report());
        took
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock of `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) }, 0);
    u64::try_from(now.tv_sec).expect("seconds") * 1_000_000
        + u64::try_from(now.tv_nsec).expect("nanos") / 1000
}

pub fn all_ready(status: &str) -> bool {
    let counts = status.split(' ').next().and_then(|c| c.split_once('/'));
    status.contains("models ready") && counts.is_some_and(|(a, b)| a == b)
}

// ---------------------------------------------------------------------------------------------
// The notify protocol.

#[test]
fn ready_comes_at_once_and_status_follows_the_download_to_all_ready() {
    let site = site();
    let blob = site.serve(AJNA, data(1, BIG));
    site.origin().add(Rule::always(Route::Cdn, drip()));
    site.write_index(&[(AJNA, &blob)]);
    let mut daemon = Daemon::start(&site);

    let (ready, message) = daemon.expect(0, Duration::from_secs(5), "READY=1", |m| m.has("READY=1"));
    let after = message.at.duration_since(daemon.started);
    assert!(after < Duration::from_secs(1), "READY=1 came {after:?} after the start\n{}", daemon.report());
    assert!(
        std::fs::symlink_metadata(site.stored(AJNA)).is_err(),
        "READY=1 came only once the model was published\n{}",
        daemon.report()
    );
    assert!(
        message.status().is_some_and(|s| s.starts_with("0/1 ready")),
        "READY without STATUS: {message:?}"
    );

    let (fetching, _) = daemon.expect_status(ready, PATIENCE, "STATUS with the download's progress", |s| {
        s.starts_with("0/1 ready · fetching ajna-insight-v2 ") && !s.contains(" 0 B/4.0 MiB")
    });
    let (_, message) = daemon.expect_status(fetching, PATIENCE, "STATUS 1/1 models ready", all_ready);
    assert_eq!(message.status(), Some("1/1 models ready (4.0 MiB)"));
    site.assert_published(AJNA, &blob);
    let fetched_for = message.at.duration_since(daemon.messages()[ready].at);
    assert!(fetched_for > Duration::from_secs(2), "the dripping CDN took only {fetched_for:?}");

    // The watchdog: pings all along, never WATCHDOG_USEC apart.
    std::thread::sleep(WATCHDOG);
    let messages = daemon.messages();
    let pings: Vec<Instant> = messages.iter().filter(|m| m.has("WATCHDOG=1")).map(|m| m.at).collect();
    assert!(pings.len() >= 8, "{} pings in {fetched_for:?}\n{}", pings.len(), daemon.report());
    let mut since = vec![messages[ready].at];
    since.extend(&pings);
    let longest = since.windows(2).map(|w| w[1].duration_since(w[0])).max().unwrap_or_default();
    assert!(
        longest < WATCHDOG,
        "{longest:?} between watchdog pings, deadline {WATCHDOG:?}\n{}",
        daemon.report()
    );
    let readies = messages.iter().filter(|m| m.has("READY=1")).count();
    assert_eq!(readies, 1, "READY=1 sent again without a reload\n{}", daemon.report());
    daemon.terminate();
}

#[test]
fn restart_with_every_model_on_disk_is_ready_at_once_without_network() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    site.write_index(&[(AJNA, &blob)]);
    let mut first = Daemon::start(&site);
    first.expect_status(0, PATIENCE, "STATUS 1/1 models ready", all_ready);
    first.terminate();
    let before = site.origin().requests().len();

    let mut again = Daemon::start(&site);
    let (_, ready) = again.expect(0, Duration::from_secs(5), "READY=1", |m| m.has("READY=1"));
    assert_eq!(ready.status(), Some("1/1 models ready (256.0 KiB)"), "{}", again.report());
    assert!(ready.at.duration_since(again.started) < Duration::from_secs(1), "{}", again.report());
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<_> = site.origin().requests().into_iter().skip(before).collect();
    assert!(after.is_empty(), "a model on disk was fetched again: {after:#?}");
    again.terminate();
}

#[test]
fn watchdog_is_left_alone_when_watchdog_pid_is_another_process() {
    // systemd sets WATCHDOG_PID to the main pid: a child process it leaked to must not ping.
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    site.write_index(&[(AJNA, &blob)]);
    let launch = Launch { env: vec![("WATCHDOG_PID", "1".to_owned())], ..Launch::default() };
    let mut daemon = Daemon::start_with(&site, &launch);
    daemon.expect_status(0, PATIENCE, "STATUS 1/1 models ready", all_ready);
    std::thread::sleep(Duration::from_millis(600));
    let pings = daemon.messages().iter().filter(|m| m.has("WATCHDOG=1")).count();
    assert_eq!(pings, 0, "pinged a watchdog meant for pid 1\n{}", daemon.report());
    daemon.terminate();
}

#[test]
fn reload_that_keeps_a_model_does_not_restart_its_download() {
    let site = site();
    let big = site.serve(AJNA, data(1, BIG));
    let small = site.serve(ANAHATA, data(2, SMALL));
    site.origin().add(Rule::always(Route::Cdn, drip()).for_target(&big.sha256));
    site.write_index(&[(AJNA, &big), (ANAHATA, &small)]);
    site.deploy(&[AJNA]);
    let daemon = Daemon::start(&site);
    let (fetching, _) = daemon.expect_status(0, PATIENCE, "STATUS fetching ajna-insight-v2", |s| {
        s.contains("fetching ajna-insight-v2") && !s.contains(" 0 B/")
    });
    std::thread::sleep(Duration::from_millis(300));

    // The reload adds a model and keeps the one in flight.
    site.deploy(&[AJNA, ANAHATA]);
    let (before, sent) = (monotonic_usec(), Instant::now());
    daemon.signal(libc::SIGHUP);
    let (reloading, message) =
        daemon.expect(fetching, Duration::from_secs(5), "RELOADING=1", |m| m.has("RELOADING=1"));
    let stamp: u64 = message
        .get("MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without a MONOTONIC_USEC: {message:?}"));
    assert!(
        (before..=monotonic_usec()).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not between the SIGHUP ({before}) and its receipt"
    );
    let (ready, message) =
        daemon.expect(reloading, Duration::from_secs(5), "READY=1 after the reload", |m| m.has("READY=1"));
    let status = message.status().unwrap_or_else(|| panic!("READY=1 without STATUS: {message:?}"));
    assert!(
        status.starts_with("0/2 ready · fetching ajna-insight-v2"),
        "the STATUS after the reload is {status:?}\n{}",
        daemon.report()
    );
    daemon.expect_status(ready, PATIENCE, "STATUS 2/2 models ready", all_ready);
    site.assert_published(AJNA, &big);
    site.assert_published(ANAHATA, &small);

    let gets = cdn_gets(&site, &big);
    assert_eq!(
        gets.len(),
        1,
        "the download of ajna-insight-v2 was restarted: {gets:#?}\n{}",
        daemon.report()
    );
    assert!(gets[0].at < sent, "the download began after the reload");
    let resolved_again = site
        .origin()
        .requests()
        .iter()
        .any(|r| r.host == Host::Hub && r.at > sent && r.path().contains(AJNA.repo));
    assert!(!resolved_again, "ajna-insight-v2 was resolved again on the reload\n{}", daemon.report());
}

#[test]
fn reload_with_a_bad_config_is_rejected_and_the_models_stay() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    let other = site.serve(ANAHATA, data(2, SMALL));
    site.write_index(&[(AJNA, &blob), (ANAHATA, &other)]);
    site.deploy(&[AJNA]);
    let mut daemon = Daemon::start(&site);
    let (ready, _) = daemon.expect_status(0, PATIENCE, "STATUS 1/1 models ready", all_ready);

    // A key the config does not know, and a model that would be added with it.
    site.set("no_such_key", true);
    site.deploy(&[AJNA, ANAHATA]);
    daemon.signal(libc::SIGHUP);
    let (reloading, _) =
        daemon.expect(ready, Duration::from_secs(5), "RELOADING=1", |m| m.has("RELOADING=1"));
    let (rejected, message) =
        daemon.expect(reloading, Duration::from_secs(5), "READY=1 after the reload", |m| m.has("READY=1"));
    let status = message.status().unwrap_or_default();
    assert!(
        status.starts_with("1/1 models ready") && status.contains("reload rejected"),
        "the STATUS after a rejected reload is {status:?}\n{}",
        daemon.report()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(daemon.exited(), None, "the daemon exited on a bad reload\n{}", daemon.report());
    assert!(
        daemon.report().contains("no_such_key"),
        "the log does not name the bad key\n{}",
        daemon.report()
    );
    let later =
        daemon.messages().into_iter().skip(rejected + 1).filter_map(|m| m.status().map(str::to_owned));
    for status in later {
        assert!(status.starts_with("1/1 models ready"), "after the rejected reload: STATUS={status}");
    }
    assert!(std::fs::symlink_metadata(site.stored(ANAHATA)).is_err(), "the rejected config was applied");
    assert!(cdn_gets(&site, &other).is_empty(), "the rejected config was applied");
    site.assert_published(AJNA, &blob);

    // Fixed, the same change goes through.
    site.unset("no_such_key");
    site.deploy(&[AJNA, ANAHATA]);
    daemon.signal(libc::SIGHUP);
    daemon.expect_status(rejected + 1, PATIENCE, "STATUS 2/2 models ready", |s| {
        s.starts_with("2/2 models ready")
    });
    site.assert_published(ANAHATA, &other);
    daemon.terminate();
}

#[test]
fn reload_retries_a_model_that_failed_for_good_at_once() {
    let site = site();
    // The index knows the file before the Hub has it: 404, a permanent failure.
    site.origin().publish_in_git(AJNA.repo, "README.md", b"# weights to come\n".to_vec());
    let content = data(1, SMALL);
    let upcoming = unpublished(content.clone());
    site.write_index(&[(AJNA, &upcoming)]);
    let daemon = Daemon::start(&site);
    let (failed, _) =
        daemon.expect_status(0, PATIENCE, "STATUS 1 failed", |s| s.contains("1 failed: ajna-insight-v2"));

    // The file is uploaded; the admin reloads rather than wait for the next re-check (6 h).
    let blob = site.serve(AJNA, content);
    daemon.reload_until_all_ready(failed);
    site.assert_published(AJNA, &blob);
}

#[test]
fn reload_reads_the_token_again_for_the_models_it_keeps() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    // Re-checked every second, so only the token can keep the model from being fetched.
    site.set("recheck_interval", "1s");
    site.write_index(&[(AJNA, &blob)]);
    write(site.dir(), "token", "hf_NotTheRightToken\n");
    let daemon = Daemon::start(&site);
    let (failed, _) =
        daemon.expect_status(0, PATIENCE, "STATUS 1 failed", |s| s.contains("1 failed: ajna-insight-v2"));

    // The admin puts the right token in place and reloads.
    write(site.dir(), "token", &format!("{TOKEN}\n"));
    daemon.reload_until_all_ready(failed);
    site.assert_published(AJNA, &blob);
}

#[test]
fn sigterm_stops_a_download_in_seconds_and_the_next_run_resumes_it() {
    let site = site();
    let blob = site.serve(AJNA, data(1, BIG));
    site.origin().add(Rule::once(Route::Cdn, drip()));
    site.write_index(&[(AJNA, &blob)]);
    let mut daemon = Daemon::start(&site);
    let (fetching, _) = daemon.expect_status(0, PATIENCE, "STATUS fetching 1 MiB", |s| {
        s.contains("fetching ajna-insight-v2 1.") || s.contains("fetching ajna-insight-v2 2.")
    });
    let took = daemon.terminate();
    daemon.expect(fetching, Duration::from_secs(1), "STOPPING=1", |m| m.has("STOPPING=1"));
    assert!(
        daemon.messages().iter().skip(fetching).all(|m| !m.has("READY=1")),
        "READY=1 while stopping\n{}",
        daemon.report()
    );
    assert!(std::fs::symlink_metadata(site.stored(AJNA)).is_err(), "published after SIGTERM?");
    let kept = std::fs::metadata(site.paths(AJNA, &blob).partial()).map_or(0, |m| m.len());
    assert!(
        kept >= 1 << 20 && kept < BIG as u64,
        "{kept} bytes in the partial file after stopping at 1 MiB or more (in {took:?})\n{}",
        daemon.report()
    );

    let next = Daemon::start(&site);
    next.expect_status(0, PATIENCE, "STATUS 1/1 models ready", all_ready);
    site.assert_published(AJNA, &blob);
    let gets = cdn_gets(&site, &blob);
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[1].range(), Some((kept, None)), "the second run did not resume the partial file");
}

// ---------------------------------------------------------------------------------------------
// Exit statuses before READY.

/// Runs the daemon expecting it to exit by itself; returns its exit code and what it printed.
fn run_to_exit(site: &Site) -> (Option<i32>, Daemon) {
    let mut daemon = Daemon::start(site);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "models-fetch run did not exit\n{}", daemon.report());
    let no_ready = daemon.messages().iter().all(|m| !m.has("READY=1"));
    assert!(no_ready, "READY=1 sent by a daemon that did not start\n{}", daemon.report());
    (status.and_then(|s| s.code()), daemon)
}

#[test]
fn config_error_exits_78_without_ready() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    site.set("max_parallel_model", 3);
    site.write_index(&[(AJNA, &blob)]);
    let (code, daemon) = run_to_exit(&site);
    assert_eq!(code, Some(78), "{}", daemon.report());
    assert!(daemon.report().contains("max_parallel_model"), "the bad key is not named\n{}", daemon.report());
}

#[test]
fn invalid_index_exits_65_without_ready() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    let mut index = site.index(&[(AJNA, &blob)]);
    index["models"][0]["artifact"]["sha256"] = "abc".into();
    site.write_index_json(&index);
    site.deploy(&[AJNA]);
    let (code, daemon) = run_to_exit(&site);
    assert_eq!(code, Some(65), "{}", daemon.report());
    assert!(daemon.report().contains("/models/0/artifact/sha256"), "{}", daemon.report());
}

#[test]
fn second_run_on_the_same_store_exits_75_naming_the_first() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    site.write_index(&[(AJNA, &blob)]);
    let mut first = Daemon::start(&site);
    first.expect(0, Duration::from_secs(5), "READY=1", |m| m.has("READY=1"));

    let (code, second) = run_to_exit(&site);
    assert_eq!(code, Some(75), "{}", second.report());
    assert!(
        second.report().contains(&format!("pid {}", first.pid)),
        "the second run does not name the first's pid {}\n{}",
        first.pid,
        second.report()
    );
    assert_eq!(first.exited(), None, "the first daemon stopped");
    first.terminate();
}

// ---------------------------------------------------------------------------------------------
// `status`, `wait` and the metrics file.

#[test]
fn status_wait_and_metrics_follow_a_running_daemon() {
    let site = site();
    let big = site.serve(AJNA, data(1, BIG));
    let small = site.serve(ANAHATA, data(2, SMALL));
    site.origin().add(Rule::always(Route::Cdn, drip()).for_target(&big.sha256));
    site.set("metrics_file", "metrics.prom");
    site.write_index(&[(AJNA, &big), (ANAHATA, &small)]);
    let metrics = || std::fs::read_to_string(site.dir().join("metrics.prom")).unwrap_or_default();
    let started = Instant::now();
    let mut daemon = Daemon::start_with(&site, &Launch { notify: false, ..Launch::default() });

    let waiter = {
        let mut wait = site.command(&["wait", "--timeout", "10s"]);
        std::thread::spawn(move || {
            let output = wait.output().expect("wait runs");
            (output, Instant::now())
        })
    };

    // While ajna-insight-v2 drips in: its state, the pid, and the metrics say so.
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let status = site.status();
        let ajna = status_of(&status, AJNA);
        let anahata = status_of(&status, ANAHATA);
        if ajna["state"] == "fetching" && ajna["bytes"].as_u64() > Some(0) && anahata["state"] == "ready" {
            break status;
        }
        assert!(Instant::now() < deadline, "never saw fetching + ready: {status:#}\n{}", daemon.report());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["daemon_pid"], daemon.pid, "{status:#}");
    assert!(
        status["daemon_status"].as_str().is_some_and(|s| s.contains("fetching ajna-insight-v2")),
        "{status:#}"
    );
    let text = metrics();
    for line in [
        "models_fetch_model_ready{model=\"ajna-insight-v2\"} 0",
        "models_fetch_model_ready{model=\"anahata-heart-v1\"} 1",
        "models_fetch_model_failed{model=\"ajna-insight-v2\"} 0",
        &format!("models_fetch_model_size_bytes{{model=\"ajna-insight-v2\"}} {BIG}"),
    ] {
        assert!(text.lines().any(|l| l == line), "metrics lack {line:?}:\n{text}");
    }
    assert!(!waiter.is_finished(), "wait returned while a model was still being fetched");

    let (output, returned) = waiter.join().expect("wait thread");
    assert_eq!(output.status.code(), Some(0), "wait: {}", crate::fixture::text(&output));
    assert!(returned.duration_since(started) > Duration::from_secs(2), "wait did not wait");
    site.assert_published(AJNA, &big);
    site.assert_published(ANAHATA, &small);

    let status = site.status();
    for (model, size) in [(AJNA, BIG), (ANAHATA, SMALL)] {
        let row = status_of(&status, model);
        assert_eq!(row["state"], "ready", "{status:#}");
        assert_eq!(row["bytes"], size, "{status:#}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metrics().contains("models_fetch_model_ready{model=\"ajna-insight-v2\"} 1") {
        assert!(Instant::now() < deadline, "the metrics never said ready:\n{}", metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = metrics();
    assert!(
        text.contains(&format!("models_fetch_model_bytes{{model=\"ajna-insight-v2\"}} {BIG}\n")),
        "{text}"
    );

    daemon.terminate();
    assert_eq!(site.status()["daemon_pid"], serde_json::Value::Null, "a stopped daemon still shows");
}

#[test]
fn wait_fails_fast_naming_the_model_and_the_reason() {
    let site = site();
    // ajna-insight-v2: the CDN flips a byte. anahata-heart-v1: the Hub has no such file.
    let flipped = site.serve(AJNA, data(1, SMALL));
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(1000)).for_target(&flipped.sha256));
    site.origin().publish_in_git(ANAHATA.repo, "README.md", b"# no weights here\n".to_vec());
    let missing = unpublished(data(2, SMALL));
    site.write_index(&[(AJNA, &flipped), (ANAHATA, &missing)]);
    let mut daemon = Daemon::start_with(&site, &Launch { notify: false, ..Launch::default() });

    for (model, reason) in [(AJNA, "checksum mismatch"), (ANAHATA, "404")] {
        let started = Instant::now();
        let output =
            site.command(&["wait", "--timeout", "10s", model.id]).output().expect("models-fetch runs");
        let took = started.elapsed();
        let out = text(&output);
        assert_ne!(output.status.code(), Some(0), "wait succeeded for a failed model: {out}");
        assert!(took < Duration::from_secs(5), "wait took {took:?} to see a permanent failure: {out}");
        let named = out.lines().any(|l| l.contains(model.id) && l.contains(reason));
        assert!(named, "no line names {} and {reason:?}: {out}\n{}", model.id, daemon.report());
    }
    let status = site.status();
    assert_eq!(status["daemon_pid"], daemon.pid, "{status:#}");
    for (model, kind) in [(AJNA, "integrity"), (ANAHATA, "permanent")] {
        let row = status_of(&status, model);
        assert_eq!(row["state"], "failed", "{status:#}");
        assert_eq!(row["error_kind"], kind, "{status:#}");
    }
    assert_eq!(daemon.exited(), None, "the daemon stopped on a failed model\n{}", daemon.report());
    daemon.terminate();
}

#[test]
fn wait_keeps_waiting_through_a_transient_failure() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    site.origin().add(Rule::always(Route::Cdn, Fault::status(503, &[])));
    site.write_index(&[(AJNA, &blob)]);
    let mut daemon = Daemon::start(&site);
    daemon.expect_status(0, PATIENCE, "STATUS 1 failed (retrying)", |s| {
        s.contains("ajna-insight-v2 (retrying)")
    });
    let started = Instant::now();
    let output = site.command(&["wait", "--timeout", "2s"]).output().expect("models-fetch runs");
    let out = text(&output);
    assert_eq!(output.status.code(), Some(75), "wait gave up on a transient failure: {out}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "wait returned after {:?}: {out}",
        started.elapsed()
    );
    assert!(out.contains("timed out") && out.contains(AJNA.id), "{out}");
    daemon.terminate();
}

#[test]
fn wait_times_out_with_75_when_no_daemon_runs() {
    let site = site();
    let blob = site.serve(AJNA, data(1, SMALL));
    site.write_index(&[(AJNA, &blob)]);
    let started = Instant::now();
    let output = site.command(&["wait", "--timeout", "1s"]).output().expect("models-fetch runs");
    let took = started.elapsed();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(75), "{out}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "timed out after {took:?}");
    assert!(out.contains("timed out") && out.contains(AJNA.id), "{out}");
    assert!(site.origin().requests().is_empty(), "wait went to the network");
}
