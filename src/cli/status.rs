//! `models-fetch status [--config FILE] [--json]`: every deployed model's state, size, path and
//! last error, from the daemon's state file and the disk, and the daemon's pid; each model's
//! kept previous versions, and those of models no longer deployed (from their records).

use bytesize::ByteSize;
use serde::Serialize;

use super::{ConfigArg, Failure, Status};
use crate::daemon::state::{ModelState, Phase, StateFile};
use crate::layout::Layout;
use crate::lifecycle::{self, record::Version};
use crate::plan::plan;
use crate::publish::{self, State};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    /// The daemon's pid, when one is running on this store.
    daemon_pid: Option<u32>,
    /// The daemon's last `STATUS=` line.
    daemon_status: Option<String>,
    /// Why the state file could not be read (the rows then say only what the disk says).
    #[serde(skip_serializing_if = "Option::is_none")]
    state_file_error: Option<String>,
    models: Vec<Row>,
    /// Models no longer deployed whose versions are kept (their links are gone).
    removed: Vec<Removed>,
}

/// A kept version that is not its model's published one.
#[derive(Serialize)]
struct Previous {
    version: String,
    commit: Option<String>,
    size_bytes: u64,
    files: usize,
    /// When it last was the published version (Unix seconds).
    published_at: u64,
    tree: String,
}

impl Previous {
    fn of(v: &Version) -> Self {
        Self {
            version: v.version.clone(),
            commit: v.commit.clone(),
            size_bytes: v.size_bytes(),
            files: v.files.len(),
            published_at: lifecycle::record::seconds(v.seq),
            tree: v.key.clone(),
        }
    }

    fn line(&self) -> String {
        let commit =
            self.commit.as_deref().map_or(String::new(), |c| format!(", commit {}", &c[..c.len().min(12)]));
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.published_at);
        format!(
            "previous: version {}{commit}, {} files, {}, last published {}",
            self.version,
            self.files,
            ByteSize(self.size_bytes).display().iec(),
            humantime::format_rfc3339_seconds(when)
        )
    }
}

#[derive(Serialize)]
struct Removed {
    id: String,
    previous: Vec<Previous>,
}

#[derive(Serialize)]
struct Row {
    id: String,
    state: Phase,
    size_bytes: u64,
    bytes: u64,
    /// Files of the model, and how many are verified and in place.
    files: usize,
    files_done: usize,
    sha256: String,
    path: String,
    last_error: Option<String>,
    error_kind: Option<String>,
    /// Kept previous versions, oldest first.
    previous: Vec<Previous>,
}

pub(super) fn run(args: &Args) -> Result<Status, Failure> {
    let (config, index) = args.config.load()?;
    let plan = plan(&config, &index)?;
    let layout = Layout::new(&config);
    // A state file that cannot be read (a FIFO or a device planted there, garbage) is named in
    // a warning; the disk still says what is published.
    let (file, state_file_error) = match StateFile::read(&layout.state_file()) {
        Ok(file) => (file, None),
        Err(e) => {
            tracing::warn!("{e}; showing only what the disk says");
            (None, Some(e))
        }
    };
    let daemon_pid = file.as_ref().map(|f| f.pid).filter(|pid| alive(*pid));
    let mut previous = lifecycle::previous(&layout, &plan.items);
    let rows: Vec<Row> = plan
        .items
        .iter()
        .map(|item| {
            let known: Option<&ModelState> = file.as_ref().and_then(|f| f.models.get(item.id.as_str()));
            // The disk is the truth for "ready"; the state file adds progress and errors.
            let on_disk = publish::state(&layout, item) == State::Published;
            let state = match known {
                _ if on_disk => Phase::Ready,
                // Nothing is fetching it any more: the daemon that was has stopped.
                Some(m) if m.state == Phase::Fetching && daemon_pid.is_none() && m.is_of(item) => {
                    Phase::Interrupted
                }
                Some(m) if m.state != Phase::Ready && m.is_of(item) => m.state,
                _ => Phase::Pending,
            };
            let current = known.filter(|m| m.is_of(item));
            let files = item.files.len();
            Row {
                id: item.id.to_string(),
                state,
                size_bytes: item.size_bytes(),
                bytes: if on_disk { item.size_bytes() } else { current.map_or(0, |m| m.bytes) },
                files,
                files_done: if on_disk { files } else { current.map_or(0, |m| m.files_done.min(files)) },
                sha256: item.primary().sha256.to_string(),
                path: layout.store_path(item).display().to_string(),
                last_error: current.and_then(|m| m.last_error.clone()).filter(|_| state == Phase::Failed),
                error_kind: current.and_then(|m| m.error_kind.clone()).filter(|_| state == Phase::Failed),
                previous: previous
                    .remove(item.id.as_str())
                    .unwrap_or_default()
                    .iter()
                    .map(Previous::of)
                    .collect(),
            }
        })
        .collect();
    let report = Report {
        daemon_pid,
        daemon_status: file.filter(|_| daemon_pid.is_some()).map(|f| f.status),
        state_file_error,
        models: rows,
        removed: {
            let mut removed: Vec<Removed> = previous
                .into_iter()
                .map(|(id, versions)| Removed { id, previous: versions.iter().map(Previous::of).collect() })
                .collect();
            removed.sort_by(|a, b| a.id.cmp(&b.id));
            removed
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::new(Status::IoErr, e))?);
        return Ok(Status::Success);
    }
    match (report.daemon_pid, &report.daemon_status) {
        (Some(pid), Some(status)) => println!("daemon: running, pid {pid}: {status}"),
        _ => println!("daemon: not running"),
    }
    let width = report.models.iter().map(|r| r.id.len()).max().unwrap_or(5).max(5);
    println!("{:width$}  {:11}  {:>7}  {:>21}  path / last error", "model", "state", "files", "bytes");
    for row in &report.models {
        let state = serde_json::to_value(row.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let bytes =
            format!("{}/{}", ByteSize(row.bytes).display().iec(), ByteSize(row.size_bytes).display().iec());
        let detail = row.last_error.as_ref().map_or_else(
            || row.path.clone(),
            |e| format!("{}: {e}", row.error_kind.as_deref().unwrap_or("error")),
        );
        let files = format!("{}/{}", row.files_done, row.files);
        println!("{:width$}  {state:11}  {files:>7}  {bytes:>21}  {detail}", row.id);
        for kept in &row.previous {
            println!("{:width$}  {}", "", kept.line());
        }
    }
    for gone in &report.removed {
        println!("{}: no longer deployed, kept until gc:", gone.id);
        for kept in &gone.previous {
            println!("  {}", kept.line());
        }
    }
    Ok(Status::Success)
}

/// Whether a process with this pid exists (signal 0).
pub(super) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
