//! The daemon's view of every deployed model, the one-line `STATUS=` made from it, the state
//! file that `wait` and `status` read (`{store_dir}/.models-fetch/state.json`, replaced
//! atomically), and the Prometheus textfile. Everything here is pure but the two writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::fetch::{Kind, Symptom};
use crate::fsx;
use crate::item::Item;

/// Where a model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not checked or fetched yet.
    Pending,
    Fetching,
    /// Published and verified.
    Ready,
    /// The last try failed; see `error_kind` and `next_attempt_at`.
    Failed,
    /// Was being fetched when the daemon stopped (or was killed); the partial file is kept and
    /// the next run resumes it. Never written by the daemon: `status` says it when no daemon runs.
    Interrupted,
}

/// One model in the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelState {
    pub state: Phase,
    /// The primary file's sha256.
    pub sha256: String,
    /// The digest of the model's whole file set (`Item::set_digest`): which version of the
    /// model this state is about.
    #[serde(default)]
    pub digest: String,
    /// Bytes of every file of the model.
    pub size_bytes: u64,
    /// Bytes of the model's files on disk (while fetching: so far).
    pub bytes: u64,
    /// Files of the model.
    #[serde(default)]
    pub files: usize,
    /// Files verified and in place (the model is ready once they all are and it is linked).
    #[serde(default)]
    pub files_done: usize,
    /// Receive rate of the current download, bytes per second.
    #[serde(default)]
    pub rate: u64,
    pub path: PathBuf,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub error_kind: Option<String>,
    /// The last failure in the few words of the status line.
    #[serde(default)]
    pub symptom: Option<Symptom>,
    pub updated_at: u64,
    #[serde(default)]
    pub ready_at: Option<u64>,
    #[serde(default)]
    pub next_attempt_at: Option<u64>,
}

impl ModelState {
    /// `path` is the model's stable path.
    pub fn new(item: &Item, path: PathBuf, ready: bool) -> Self {
        let now = unix_now();
        Self {
            state: if ready { Phase::Ready } else { Phase::Pending },
            sha256: item.primary().sha256.to_string(),
            digest: item.set_digest().to_string(),
            size_bytes: item.size_bytes(),
            bytes: if ready { item.size_bytes() } else { 0 },
            files: item.files.len(),
            files_done: if ready { item.files.len() } else { 0 },
            rate: 0,
            path,
            last_error: None,
            error_kind: None,
            symptom: None,
            updated_at: now,
            ready_at: ready.then_some(now),
            next_attempt_at: None,
        }
    }

    /// Whether this state is about `item` as indexed now (the same file set).
    pub fn is_of(&self, item: &Item) -> bool {
        self.digest == item.set_digest().as_str()
    }

    /// A failure that no retry will mend without a change (everything but transient).
    pub fn failed_for_good(&self) -> bool {
        self.state == Phase::Failed && self.error_kind.as_deref() != Some(Kind::Transient.name())
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub pid: u32,
    pub started_at: u64,
    pub updated_at: u64,
    /// The daemon's `STATUS=` line.
    pub status: String,
    pub models: BTreeMap<String, ModelState>,
    /// Bytes in the Hub cache and the state folder's blobs, at the last gc.
    #[serde(default)]
    pub cache_bytes: u64,
    /// Bytes the daemon's gc and the disk-pressure valve gave back since it started.
    #[serde(default)]
    pub reclaimed_bytes_total: u64,
}

impl StateFile {
    /// The state file at `path` (the layout's `state_file`): `None` when there is none; an
    /// error naming the file when it is not a regular file of at most 64 MiB (a FIFO or a
    /// device there is refused at once, never read into a hang), or not a state file.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        let bytes = match fsx::read_bounded(path, fsx::STATE) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("the state file {}: {e}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("the state file {}: not a state file: {e}", path.display()))
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        fsx::write_atomic(path, &serde_json::to_vec_pretty(self).expect("state serializes"))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// The one-line status for `systemctl status`, e.g.
/// `2/3 ready · fetching ajna-insight-v2 1.2/4.0 GiB 210.0 MiB/s · 0 failed`,
/// `3/3 models ready (5.2 GiB)`, `2/3 ready · 1 failed: ajna-insight-v2 (checksum mismatch)`.
pub fn status_line(models: &BTreeMap<String, ModelState>) -> String {
    let total = models.len();
    let ready = models.values().filter(|m| m.state == Phase::Ready).count();
    let failed: Vec<(&String, &ModelState)> =
        models.iter().filter(|(_, m)| m.state == Phase::Failed).collect();
    if ready == total {
        let bytes: u64 = models.values().map(|m| m.size_bytes).sum();
        return format!("{ready}/{total} models ready ({})", size(bytes));
    }
    let mut line = format!("{ready}/{total} ready");
    let fetching: Vec<(&String, &ModelState)> =
        models.iter().filter(|(_, m)| m.state == Phase::Fetching).collect();
    if let Some((id, m)) = fetching.first() {
        let _ = write!(line, " · fetching {id} {}/{} {}/s", size(m.bytes), size(m.size_bytes), size(m.rate));
        if fetching.len() > 1 {
            let _ = write!(line, " (+{} more)", fetching.len() - 1);
        }
    }
    match failed.as_slice() {
        [] if fetching.is_empty() => line.push_str(" · checking"),
        [] => line.push_str(" · 0 failed"),
        [(id, m)] => {
            let _ = write!(line, " · 1 failed: {id} ({})", m.symptom.map_or("see journal", Symptom::words));
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|(id, _)| id.as_str()).collect();
            let _ = write!(line, " · {} failed: {}", many.len(), ids.join(", "));
        }
    }
    line
}

/// The Prometheus textfile: per-model readiness, bytes and failure.
pub fn metrics(file: &StateFile) -> String {
    let models = &file.models;
    let mut out = String::new();
    let mut family = |name: &str, help: &str, value: &dyn Fn(&ModelState) -> String| {
        let _ = writeln!(out, "# HELP models_fetch_{name} {help}\n# TYPE models_fetch_{name} gauge");
        for (id, m) in models {
            let _ = writeln!(out, "models_fetch_{name}{{model=\"{id}\"}} {}", value(m));
        }
    };
    family("model_ready", "1 when the model is published and verified.", &|m| {
        u8::from(m.state == Phase::Ready).to_string()
    });
    family("model_failed", "1 when the last try to fetch the model failed.", &|m| {
        u8::from(m.state == Phase::Failed).to_string()
    });
    family("model_bytes", "Bytes of the model's files on disk (so far, while fetching).", &|m| {
        m.bytes.to_string()
    });
    family("model_size_bytes", "Size of the model's files per the index.", &|m| m.size_bytes.to_string());
    family("model_files", "Files of the model per the index.", &|m| m.files.to_string());
    family("model_files_done", "Files of the model verified and in place.", &|m| m.files_done.to_string());
    let _ = writeln!(
        out,
        "# HELP models_fetch_cache_bytes Bytes the cache holds (the Hub cache and models-fetch's own blobs).\n# TYPE models_fetch_cache_bytes gauge\nmodels_fetch_cache_bytes {}",
        file.cache_bytes
    );
    let _ = writeln!(
        out,
        "# HELP models_fetch_reclaimed_bytes_total Bytes given back by removing versions no longer deployed nor kept.\n# TYPE models_fetch_reclaimed_bytes_total counter\nmodels_fetch_reclaimed_bytes_total {}",
        file.reclaimed_bytes_total
    );
    let _ = writeln!(
        out,
        "# HELP models_fetch_last_update_timestamp_seconds When this file was written.\n# TYPE models_fetch_last_update_timestamp_seconds gauge\nmodels_fetch_last_update_timestamp_seconds {}",
        unix_now()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(state: Phase, bytes: u64, size: u64) -> ModelState {
        ModelState {
            state,
            sha256: "a".repeat(64),
            digest: "b".repeat(64),
            size_bytes: size,
            bytes,
            files: 1,
            files_done: 0,
            rate: 210 << 20,
            path: PathBuf::from("/var/lib/models/x/x.bin"),
            last_error: None,
            error_kind: None,
            symptom: None,
            updated_at: 0,
            ready_at: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn status_lines_read_like_the_examples() {
        let gib = 1u64 << 30;
        let mut models = BTreeMap::new();
        models.insert("ajna-insight-v2".to_owned(), model(Phase::Fetching, gib + gib / 5, 4 * gib));
        models.insert("anahata-heart-v1".to_owned(), model(Phase::Ready, gib, gib));
        models.insert("muladhara-foundation-v1".to_owned(), model(Phase::Ready, gib, gib));
        assert_eq!(
            status_line(&models),
            "2/3 ready · fetching ajna-insight-v2 1.2 GiB/4.0 GiB 210.0 MiB/s · 0 failed"
        );

        let failed = models.get_mut("ajna-insight-v2").unwrap();
        failed.state = Phase::Failed;
        failed.error_kind = Some("integrity".into());
        failed.last_error = Some("checksum mismatch: expected sha256 a, got b".into());
        failed.symptom = Some(Symptom::ChecksumMismatch);
        assert_eq!(status_line(&models), "2/3 ready · 1 failed: ajna-insight-v2 (checksum mismatch)");

        models.get_mut("ajna-insight-v2").unwrap().state = Phase::Ready;
        assert_eq!(status_line(&models), "3/3 models ready (6.0 GiB)");
    }

    #[test]
    fn the_reason_in_the_status_line_is_the_symptom_not_the_text() {
        let mut models = BTreeMap::new();
        let mut m = model(Phase::Failed, 0, 5);
        m.error_kind = Some("local".into());
        // A message that reads like one failure while the symptom says another.
        m.last_error = Some("cannot write /p: not enough space, checksum mismatch, the index says".into());
        m.symptom = Some(Symptom::DiskError);
        models.insert("m1".to_owned(), m);
        models.insert("m2".to_owned(), model(Phase::Ready, 5, 5));
        assert_eq!(status_line(&models), "1/2 ready · 1 failed: m1 (disk error)");
        models.get_mut("m1").unwrap().symptom = Some(Symptom::DiskFull);
        assert_eq!(status_line(&models), "1/2 ready · 1 failed: m1 (disk full)");
        // A state file of a daemon that did not record it.
        models.get_mut("m1").unwrap().symptom = None;
        assert_eq!(status_line(&models), "1/2 ready · 1 failed: m1 (see journal)");
        let json = serde_json::to_string(&Some(Symptom::UpstreamChanged)).unwrap();
        assert_eq!(json, "\"upstream-changed\"");
    }

    #[test]
    fn metrics_have_a_line_per_model() {
        let mut models = BTreeMap::new();
        models.insert("m1".to_owned(), model(Phase::Ready, 5, 5));
        let file = StateFile {
            pid: 1,
            started_at: 0,
            updated_at: 0,
            status: String::new(),
            models,
            cache_bytes: 7,
            reclaimed_bytes_total: 3,
        };
        let text = metrics(&file);
        assert!(text.contains("models_fetch_model_ready{model=\"m1\"} 1\n"), "{text}");
        assert!(text.contains("models_fetch_cache_bytes 7\n"), "{text}");
        assert!(
            text.contains(
                "# TYPE models_fetch_reclaimed_bytes_total counter\nmodels_fetch_reclaimed_bytes_total 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("models_fetch_model_size_bytes{model=\"m1\"} 5\n"), "{text}");
        assert!(text.contains("# TYPE models_fetch_model_failed gauge"), "{text}");
    }

    #[test]
    fn transient_failures_are_not_final() {
        let mut m = model(Phase::Failed, 0, 5);
        m.error_kind = Some("transient".into());
        assert!(!m.failed_for_good());
        m.error_kind = Some("permanent".into());
        assert!(m.failed_for_good());
    }
}
