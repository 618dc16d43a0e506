//! Parallel ranged download of one large file into its preallocated partial file: requests
//! for ranges of at most `chunk_size` bytes (32 MiB by default), taken in file order, land in
//! place; the sink hashes them in order (from memory when a range is the next in order, read
//! back from the file otherwise), so the sha256 is ready when the last byte lands.
//!
//! Connections are added while the network is the bottleneck (`Ramp`): one starts, and every
//! `RAMP_EVERY` another one (up to `connections_per_file`) when the receivers did not have to
//! wait for the hasher and writer, kept only when it made the download faster. A fast origin is
//! read over one connection, in order, with no byte read back; a slow one gets as many as help.
//! The large files of one model share the budget (`slot::Connections`): shards downloaded at
//! the same time stay on one connection each.
//!
//! A sidecar, `{partial}.chunks`, records the byte ranges on disk, rewritten in place every few
//! MiB, so a crash loses only the bytes in flight (the pool's few MiB). It names the expected
//! sha256 and size: a partial of other content is never resumed. It is not fsync'd each time:
//! after a power cut it may name bytes the disk lost, and then the final digest fails, the
//! caller starts over once without the partial file, and nothing wrong is published. A server
//! that ignores `Range` makes the caller fall back to one stream.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rangemap::RangeSet;
use reqwest::StatusCode;

use super::error::{Cause, Part};
use super::partial::{self, Partial};
use super::slot::{Connections, Lease};
use super::{FetchError, Http, Progress};
use crate::secret::redact;
use crate::sink::Sink;
use crate::verify::{Expected, Written};

/// How often the connection count is reconsidered.
const RAMP_EVERY: Duration = Duration::from_millis(100);
/// Another connection is opened when receivers waited for the disk less than this share of
/// the time, and the hasher was busy less than that share.
const RAMP_BELOW: f64 = 0.2;
const HASHER_BUSY_BELOW: f64 = 0.5;

/// How a parallel download ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The partial file holds the whole file, fsync'd; the digest is checked by the caller.
    Done(Written),
    /// The server does not honour `Range`: the partial file and sidecar are gone; stream instead.
    NoRanges,
}

/// What the connections share.
struct Shared<'a> {
    http: &'a Http,
    url: &'a str,
    expected: &'a Expected,
    queue: Mutex<VecDeque<(u64, u64)>>,
    received: AtomicU64,
    /// Connections running, and how many the ramp wants.
    active: AtomicUsize,
    wanted: AtomicUsize,
    transferred: &'a AtomicU64,
    progress: Progress<'a>,
}

/// Downloads `url` into `partial` over up to `connections_per_file` connections (fewer while
/// other files of the model hold some of `budget`), resuming from the ranges its sidecar
/// records when `state` has them. `transferred` counts bytes received.
#[allow(clippy::too_many_arguments)]
pub async fn download(
    http: &Http,
    url: &str,
    partial: &Path,
    state: Partial,
    expected: &Expected,
    progress: Progress<'_>,
    transferred: &AtomicU64,
    budget: &Connections,
) -> Result<Ended, FetchError> {
    let local = |doing: &str, e: io::Error| FetchError::io(format!("{doing} {}", partial.display()), e);
    let on_disk = match state {
        Partial::Ranges(on_disk) => on_disk,
        Partial::Absent | Partial::Prefix(_) | Partial::Stale => {
            partial::start_ranges(partial, expected).map_err(|e| local("cannot prepare", e))?;
            RangeSet::new()
        }
    };
    let done: u64 = on_disk.iter().map(|r| r.end - r.start).sum();
    if done > 0 {
        tracing::info!(bytes_on_disk = done, url = %redact(url), "resuming a parallel download");
    }
    let recorder =
        partial::recorder(partial, expected).map_err(|e| local("cannot open the sidecar of", e))?;
    let queue = requests(&on_disk, expected.size, http.chunk_size);
    let most = http.connections_per_file.max(1);
    // Buffers for one receiver; the pool grows with each connection added.
    let sink = Sink::start(partial, expected.size, on_disk, 1, Some(recorder))
        .map_err(|e| FetchError::sink(partial, e))?;
    let shared = Shared {
        http,
        url,
        expected,
        queue: Mutex::new(queue),
        received: AtomicU64::new(done),
        active: AtomicUsize::new(1),
        wanted: AtomicUsize::new(1),
        transferred,
        progress,
    };
    progress(done);

    let outcome = connections(&shared, &sink, most, budget).await;
    let ended = sink.end().await.map_err(|e| FetchError::sink(partial, e));
    match outcome {
        Err(e) if matches!(*e.cause, Cause::NoRanges { .. }) => {
            partial::remove(partial);
            return Ok(Ended::NoRanges);
        }
        // A failed writer or hasher is the cause of a connection's "the writer stopped".
        Err(e) => return Err(ended.err().unwrap_or(e)),
        Ok(()) => {}
    }
    match ended?.complete {
        Some(written) => {
            partial::remove_sidecar(partial);
            Ok(Ended::Done(written))
        }
        None => Err(local("writing", io::Error::other("the download ended with bytes missing"))),
    }
}

/// Runs connections until the queue is empty, adding one while that makes the download faster
/// and the model's budget has room.
async fn connections(
    shared: &Shared<'_>,
    sink: &Sink,
    most: usize,
    budget: &Connections,
) -> Result<(), FetchError> {
    let mut running = FuturesUnordered::new();
    running.push(connection(shared, sink, budget.first(most).await));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + RAMP_EVERY, RAMP_EVERY);
    let mut ramp = Ramp::new(most, shared.received.load(Ordering::Relaxed));
    loop {
        tokio::select! {
            finished = running.next() => match finished {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(())) => {}
            },
            _ = ticks.tick() => {
                let work_left = !shared.queue.lock().expect("queue lock").is_empty();
                let received = shared.received.load(Ordering::Relaxed);
                let load = Load { waited_ns: sink.backpressure_ns(), hashing_ns: sink.hasher_busy_ns() };
                ramp.running(shared.active.load(Ordering::Relaxed));
                shared.wanted.store(ramp.wanted, Ordering::Relaxed);
                match ramp.tick(received, load, work_left) {
                    Step::Open(more) => {
                        let leases: Vec<Lease<'_>> = (0..more).map_while(|_| budget.another(most)).collect();
                        if leases.len() < more {
                            let granted = leases.len();
                            tracing::debug!(granted, asked = more, "the model's other files hold its connections");
                        }
                        ramp.granted(leases.len());
                        shared.active.fetch_add(leases.len(), Ordering::Relaxed);
                        shared.wanted.store(ramp.wanted, Ordering::Relaxed);
                        sink.add_receivers(leases.len());
                        for lease in leases {
                            running.push(connection(shared, sink, lease));
                        }
                    }
                    Step::Close => shared.wanted.store(ramp.wanted, Ordering::Relaxed),
                    Step::Stay => {}
                }
            }
        }
    }
}

/// What the ramp decides at a tick.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Open this many more connections.
    Open(usize),
    /// Close connections down to `Ramp::wanted` (each as its range is done).
    Close,
    Stay,
}

/// The connection count: doubled (up to `most`) while the network is the bottleneck (the
/// receivers do not wait for the disk, and the hasher idles more than half the time, so even
/// twice the speed would not make the hash the limit) and the last step made the download
/// faster; when it did not, the count goes back and the ramp stops. So a fast origin is read
/// over one connection, in order, and a slow one gets as many as help, within a few ticks.
struct Ramp {
    most: usize,
    wanted: usize,
    received: u64,
    load: Load,
    trial: Option<Trial>,
    stopped: bool,
}

/// A step being judged: bytes per tick before it, the count before it, ticks left, bytes since.
#[derive(Debug, Clone, Copy)]
struct Trial {
    before: u64,
    previous: usize,
    ticks_left: u32,
    since: u64,
}

impl Ramp {
    fn new(most: usize, received: u64) -> Self {
        Self { most, wanted: 1, received, load: Load::default(), trial: None, stopped: most <= 1 }
    }

    fn tick(&mut self, received: u64, load: Load, work_left: bool) -> Step {
        let bytes = received - self.received;
        let tick = RAMP_EVERY.as_nanos() as f64;
        let waited = load.waited_ns.saturating_sub(self.load.waited_ns) as f64 / tick;
        let hashing = load.hashing_ns.saturating_sub(self.load.hashing_ns) as f64 / tick;
        (self.received, self.load) = (received, load);
        if let Some(mut trial) = self.trial.take() {
            trial.since += bytes;
            if trial.ticks_left > 1 {
                trial.ticks_left -= 1;
                self.trial = Some(trial);
                return Step::Stay;
            }
            let rate = trial.since / u64::from(TRIAL_TICKS);
            if (rate as f64) < trial.before as f64 * RAMP_GAIN {
                self.wanted = trial.previous;
                self.stopped = true;
                tracing::debug!(connections = self.wanted, "more connections did not help: going back");
                return Step::Close;
            }
        }
        let network_bound = waited < RAMP_BELOW && hashing < HASHER_BUSY_BELOW;
        if self.stopped || !work_left || self.wanted >= self.most || !network_bound || bytes == 0 {
            return Step::Stay;
        }
        let previous = self.wanted;
        self.wanted = (2 * previous).min(self.most);
        self.trial = Some(Trial { before: bytes, previous, ticks_left: TRIAL_TICKS, since: 0 });
        tracing::debug!(connections = self.wanted, "the network is the bottleneck: more connections");
        Step::Open(self.wanted - previous)
    }

    /// Only `active` connections run (the others ended to make room for another file of the
    /// model): a step they cut short is forgotten, not judged, so the file may ramp up again.
    fn running(&mut self, active: usize) {
        if active < self.wanted {
            self.wanted = active;
            self.trial = None;
        }
    }

    /// The model's budget granted `granted` of the connections the last `Open` asked for: the
    /// step is judged as it is, or, with none, forgotten (tried again at a later tick, when
    /// another file of the model may have ended).
    fn granted(&mut self, granted: usize) {
        let Some(trial) = self.trial else { return };
        self.wanted = trial.previous + granted;
        if granted == 0 {
            self.trial = None;
        }
    }
}

/// Time the sink spent so far: receivers waiting for a buffer, the hasher busy.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    waited_ns: u64,
    hashing_ns: u64,
}

/// Ticks a step has to show it helps, and the speed-up it must bring.
const TRIAL_TICKS: u32 = 2;
const RAMP_GAIN: f64 = 1.15;

/// One connection, counted in the model's budget while it runs (`lease`): takes the next
/// range from the queue until none is left, the ramp wants fewer, or another file of the model
/// waits for this extra connection.
async fn connection(shared: &Shared<'_>, sink: &Sink, lease: Lease<'_>) -> Result<(), FetchError> {
    let Shared { http, url, expected, .. } = *shared;
    loop {
        let surplus = |active: usize| {
            (active > shared.wanted.load(Ordering::Relaxed) || lease.wanted_back()).then(|| active - 1)
        };
        if shared.active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, surplus).is_ok() {
            return Ok(());
        }
        let Some((start, end)) = shared.queue.lock().expect("queue lock").pop_front() else { return Ok(()) };
        let last = end - 1;
        let _permit = http.host_permit(url).await;
        let mut response = http.get_range(url, start, last).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(Cause::NoRanges { url: redact(url), status: response.status() }.into());
        }
        if !super::http::content_range_is(
            response.headers().get(reqwest::header::CONTENT_RANGE),
            start,
            last,
            expected.size,
        ) {
            return Err(
                Cause::WrongContentRange { url: redact(url), start, last, size: expected.size }.into()
            );
        }
        let mut feed = sink.feed(start);
        let received = async {
            let mut pace = http.pace();
            while let Some(piece) = http
                .next_chunk_paced(&mut response, url, &mut pace, || {
                    let _ = feed.flush();
                })
                .await?
            {
                if feed.position() + piece.len() as u64 > end {
                    return Err(Cause::TooLong { from: redact(url), part: Part::Range { start, end } }.into());
                }
                feed.push(&piece).await?;
                let n = piece.len() as u64;
                shared.transferred.fetch_add(n, Ordering::Relaxed);
                (shared.progress)(shared.received.fetch_add(n, Ordering::Relaxed) + n);
            }
            Ok::<(), FetchError>(())
        }
        .await;
        // What arrived is kept for a resume, whatever happened next.
        let flushed = feed.flush();
        received?;
        flushed?;
        if feed.position() != end {
            let got = feed.position() - start;
            return Err(Cause::Cut { from: redact(url), got, part: Part::Range { start, end } }.into());
        }
    }
}

/// The requests for the bytes not on disk, in file order, none crossing a multiple of `chunk`.
fn requests(on_disk: &RangeSet<u64>, size: u64, chunk: u64) -> VecDeque<(u64, u64)> {
    let chunk = chunk.max(1);
    let mut queue = VecDeque::new();
    for gap in on_disk.gaps(&(0..size)) {
        let mut at = gap.start;
        while at < gap.end {
            let next = ((at / chunk + 1) * chunk).min(gap.end);
            queue.push_back((at, next));
            at = next;
        }
    }
    queue
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn the_ramp_doubles_connections_while_they_help() {
        let mut ramp = Ramp::new(6, 0);
        let mut at = 0;
        let mut tick = |ramp: &mut Ramp, bytes: u64| {
            at += bytes;
            ramp.tick(at, Load::default(), true)
        };
        // 10 MB per tick per connection: every step helps, up to the most allowed.
        assert_eq!(tick(&mut ramp, 10 * MB), Step::Open(1));
        assert_eq!(tick(&mut ramp, 20 * MB), Step::Stay);
        assert_eq!(tick(&mut ramp, 20 * MB), Step::Open(2));
        assert_eq!(tick(&mut ramp, 40 * MB), Step::Stay);
        assert_eq!(tick(&mut ramp, 40 * MB), Step::Open(2));
        assert_eq!(tick(&mut ramp, 60 * MB), Step::Stay);
        assert_eq!(tick(&mut ramp, 60 * MB), Step::Stay);
        assert_eq!(ramp.wanted, 6);
    }

    #[test]
    fn a_step_that_does_not_help_is_undone_and_the_ramp_stops() {
        let mut ramp = Ramp::new(8, 0);
        let idle = Load::default();
        assert_eq!(ramp.tick(30 * MB, idle, true), Step::Open(1));
        assert_eq!(ramp.tick(90 * MB, idle, true), Step::Stay);
        assert_eq!(ramp.tick(150 * MB, idle, true), Step::Open(2), "2 helped: 60 MB per tick against 30");
        assert_eq!(ramp.tick(215 * MB, idle, true), Step::Stay);
        assert_eq!(ramp.tick(280 * MB, idle, true), Step::Close, "4 did not: 65 MB per tick against 60");
        assert_eq!(ramp.wanted, 2);
        assert_eq!(ramp.tick(400 * MB, idle, true), Step::Stay);
    }

    #[test]
    fn a_step_the_budget_refuses_is_tried_again_later() {
        let mut ramp = Ramp::new(4, 0);
        let idle = Load::default();
        assert_eq!(ramp.tick(30 * MB, idle, true), Step::Open(1));
        ramp.granted(0);
        assert_eq!(ramp.wanted, 1, "no connection came: the count stays");
        assert_eq!(ramp.tick(60 * MB, idle, true), Step::Open(1), "not stopped: asked again");
        ramp.granted(1);
        assert_eq!(ramp.tick(120 * MB, idle, true), Step::Stay);
        assert_eq!(ramp.tick(180 * MB, idle, true), Step::Open(2), "the granted step helped");
        ramp.granted(1);
        assert_eq!(ramp.wanted, 3, "only what the budget gave is counted");
    }

    #[test]
    fn connections_given_back_to_another_file_cut_the_step_short_and_the_ramp_goes_on() {
        let mut ramp = Ramp::new(4, 0);
        let idle = Load::default();
        assert_eq!(ramp.tick(30 * MB, idle, true), Step::Open(1));
        ramp.granted(1);
        // The extra connection ended for another file of the model before the step was judged.
        ramp.running(1);
        assert_eq!(ramp.wanted, 1);
        assert_eq!(ramp.tick(45 * MB, idle, true), Step::Open(1), "not judged, not stopped: asked again");
        ramp.running(2);
        assert_eq!(ramp.wanted, 2, "what runs is never raised by it");
    }

    #[test]
    fn no_connection_is_added_while_the_disk_or_the_hash_is_the_limit() {
        let half = RAMP_EVERY.as_nanos() as u64 / 2;
        let mut ramp = Ramp::new(4, 0);
        let waiting = Load { waited_ns: half, hashing_ns: 0 };
        assert_eq!(ramp.tick(100 * MB, waiting, true), Step::Stay, "receivers wait for the disk");
        let hashing = Load { waited_ns: half, hashing_ns: 3 * half / 2 };
        assert_eq!(ramp.tick(200 * MB, hashing, true), Step::Stay, "the hasher is busy");
        let idle = Load { waited_ns: half, hashing_ns: 3 * half / 2 };
        assert_eq!(ramp.tick(300 * MB, idle, false), Step::Stay, "nothing left to fetch");
        assert_eq!(Ramp::new(1, 0).tick(MB, Load::default(), true), Step::Stay);
    }

    #[test]
    fn requests_cover_the_gaps_on_the_chunk_grid() {
        let mut on_disk = RangeSet::new();
        on_disk.insert(0..10);
        on_disk.insert(25..40);
        let queue: Vec<_> = requests(&on_disk, 50, 16).into_iter().collect();
        assert_eq!(queue, vec![(10, 16), (16, 25), (40, 48), (48, 50)]);
        assert!(requests(&(0..50).map(|i| i..i + 1).collect(), 50, 16).is_empty());
    }

    /// A server that answers every request with the whole body and 200, ignoring `Range`.
    async fn ignoring_range(body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(&body).await;
                });
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn a_server_that_ignores_range_ends_in_no_ranges_with_the_partial_gone() {
        let body = vec![7u8; 300_000];
        let endpoint = ignoring_range(body.clone()).await;
        let text =
            format!("index = \"/x/index.json\"\nendpoint = \"{endpoint}\"\nconnections_per_file = 4\n");
        let config = crate::config::Config::parse(Path::new("/x/config.toml"), &text).unwrap();
        let http = Http::new(&config, Ok(None)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("p");
        let (sha256, size) = crate::digest::hash_reader(&body[..]).unwrap();
        let expected = Expected { sha256, size, git_oid: None };
        let transferred = AtomicU64::new(0);
        let url = format!("{endpoint}/blob");
        let budget = Connections::default();
        let ended =
            download(&http, &url, &partial, Partial::Absent, &expected, &|_| {}, &transferred, &budget).await;
        assert_eq!(ended.unwrap(), Ended::NoRanges);
        assert!(!partial.exists() && !partial::sidecar_path(&partial).exists(), "the partial files stay");
    }
}
