//! The systemd notify protocol: READY, STATUS, RELOADING, STOPPING and the watchdog. A no-op
//! when `NOTIFY_SOCKET` is not set, so `run` works outside systemd too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// What the daemon tells its service manager.
pub trait Notifier: Send + Sync {
    fn send(&self, states: &[NotifyState<'_>]);

    fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, as the reload protocol asks.
    fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}

/// The real protocol, through `NOTIFY_SOCKET`.
pub struct SdNotify;

impl Notifier for SdNotify {
    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("sd_notify failed: {e}");
        }
    }
}

/// Pings the watchdog at half its deadline, from its own thread, but only while the
/// supervisor's `heartbeat` advances: a wedged supervisor stops the pings and systemd restarts
/// the service; a slow download does not (downloads never block the supervisor).
pub fn spawn_watchdog(notifier: Arc<dyn Notifier>, heartbeat: Arc<AtomicU64>) {
    let Some(deadline) = sd_notify::watchdog_enabled() else { return };
    let interval = (deadline / 2).max(Duration::from_millis(100));
    let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        let mut seen = heartbeat.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(interval);
            let now = heartbeat.load(Ordering::Relaxed);
            if now != seen {
                notifier.send(&[NotifyState::Watchdog]);
                seen = now;
            } else {
                tracing::error!("the supervisor has not advanced for {interval:?}; not pinging the watchdog");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the watchdog thread: {e}");
    }
}
