//! The daemon's gc: after startup, after every reload and after every pass of a model that
//! ends published, what is neither deployed nor kept is removed (`lifecycle::gc`, unless
//! `prune = false`), and the cache's size measured for the metrics. Wake-ups that arrive while
//! a gc runs are folded into one more run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::TaskSettings;
use crate::lifecycle;

/// What the tasks share with the gc: the wake-up, and what it measured.
#[derive(Debug, Default)]
pub struct Collector {
    wake: Notify,
    cache_bytes: AtomicU64,
}

impl Collector {
    /// Asks for a gc (soon; several asks make one run).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Bytes the cache held at the last gc.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes.load(Ordering::Relaxed)
    }
}

/// Runs the gc whenever it is woken, with the settings current at that moment.
pub fn spawn(collector: Arc<Collector>, settings: watch::Receiver<Arc<TaskSettings>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            collector.wake.notified().await;
            let current = settings.borrow().clone();
            let (layout, items) = (current.engine.layout().clone(), current.engine.deployed());
            let (keep_previous, prune) = (current.keep_previous, current.prune);
            let measured = tokio::task::spawn_blocking(move || {
                let freed =
                    if prune { lifecycle::gc(&layout, &items, keep_previous, false).freed } else { 0 };
                (freed, lifecycle::cache_bytes(&layout))
            })
            .await;
            if let Ok((freed, cache_bytes)) = measured {
                if freed > 0 {
                    tracing::info!(bytes = freed, "gc: gave back {freed} bytes");
                }
                collector.cache_bytes.store(cache_bytes, Ordering::Relaxed);
            }
        }
    })
}
