//! Reporting progress and outcomes: progress bars on a terminal, plain periodic lines
//! otherwise, and the final summary table: the terminal's side of the engine's `Reporter`
//! trait (`crate::sync`), which knows nothing of this module.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::item::Item;
use crate::layout::Layout;
use crate::sync::{Outcome, Reporter};

/// A reporter for the terminal when stderr is one, plain lines otherwise.
pub fn for_stderr() -> Box<dyn Reporter> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::new(Duration::from_secs(5)))
    }
}

/// One indicatif bar per model in flight.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        Self { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::default() }
    }
}

impl Reporter for Bars {
    fn started(&self, item: &Item) {
        let bar = self.multi.add(ProgressBar::new(item.size_bytes()));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:28!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(item.id.to_string());
        self.bars.lock().expect("bars lock").insert(item.id.to_string(), bar);
    }

    fn progress(&self, item: &Item, position: u64) {
        if let Some(bar) = self.bars.lock().expect("bars lock").get(item.id.as_str()) {
            bar.set_position(position);
        }
    }

    fn finished(&self, item: &Item, outcome: &Outcome) {
        if let Some(bar) = self.bars.lock().expect("bars lock").remove(item.id.as_str()) {
            bar.finish_and_clear();
        }
        let _ = self.multi.println(outcome_line(item, outcome));
    }
}

/// Plain lines on stderr: a progress line per model at most every `interval`.
pub struct Lines {
    interval: Duration,
    last: Mutex<HashMap<String, (Instant, Instant, u64)>>,
}

impl Lines {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::default() }
    }
}

impl Reporter for Lines {
    fn started(&self, item: &Item) {
        let now = Instant::now();
        self.last.lock().expect("lines lock").insert(item.id.to_string(), (now, now, 0));
        if item.files.len() > 1 {
            eprintln!("{}: fetching {} ({} files)", item.id, size(item.size_bytes()), item.files.len());
        } else {
            eprintln!("{}: fetching {}", item.id, size(item.size_bytes()));
        }
    }

    fn progress(&self, item: &Item, position: u64) {
        let mut last = self.last.lock().expect("lines lock");
        let Some((started, printed, from)) = last.get_mut(item.id.as_str()) else { return };
        if printed.elapsed() < self.interval {
            return;
        }
        *printed = Instant::now();
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let rate = (position.saturating_sub(*from) as f64 / elapsed) as u64;
        let eta = item.size_bytes().saturating_sub(position).checked_div(rate).map_or_else(
            || "unknown".to_owned(),
            |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
        );
        eprintln!("{}: {}/{} {}/s eta {eta}", item.id, size(position), size(item.size_bytes()), size(rate));
    }

    fn finished(&self, item: &Item, outcome: &Outcome) {
        self.last.lock().expect("lines lock").remove(item.id.as_str());
        eprintln!("{}", outcome_line(item, outcome));
    }
}

fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// `ajna-insight-v2: published (12.2 KiB from hub https://..., 0.1 s)`.
pub fn outcome_line(item: &Item, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Published { fetched: None } => format!("{}: already published", item.id),
        Outcome::Published { fetched: Some(f) } => {
            let secs = f.elapsed.as_secs_f64();
            let rate = f.transferred as f64 / secs.max(1e-3);
            format!(
                "{}: published, {} received from {} in {secs:.1} s ({}/s)",
                item.id,
                size(f.transferred),
                f.origin,
                size(rate as u64)
            )
        }
        Outcome::Failed { reason, .. } => format!("{}: FAILED: {reason}", item.id),
    }
}

/// The final table: one row per model.
pub fn summary(layout: &Layout, items: &[Item], outcomes: &[Outcome]) -> String {
    let width = items.iter().map(|i| i.id.as_str().len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:width$}  {:9}  {:>10}  {}\n", "model", "state", "size", "path / reason");
    for (item, outcome) in items.iter().zip(outcomes) {
        let (state, detail) = match outcome {
            Outcome::Published { fetched: None } => ("ready", layout.store_path(item).display().to_string()),
            Outcome::Published { fetched: Some(_) } => {
                ("fetched", layout.store_path(item).display().to_string())
            }
            Outcome::Failed { reason, .. } => ("FAILED", reason.clone()),
        };
        let _ = writeln!(
            out,
            "{:width$}  {state:9}  {:>10}  {detail}",
            item.id.as_str(),
            size(item.size_bytes())
        );
    }
    let ready = outcomes.iter().filter(|o| o.is_published()).count();
    let total: u64 = items.iter().map(Item::size_bytes).sum();
    let _ = write!(out, "{ready}/{} models ready ({})", items.len(), size(total));
    out
}
