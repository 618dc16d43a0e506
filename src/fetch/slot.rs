//! The download slot of one model. `max_parallel_models` bounds the MODELS transferring at
//! once, not the files: the first file of a model to start a transfer takes one of the
//! `Http`'s download permits, the model's other files share it, and the last one to stop
//! gives it back. A file waiting for a retry holds nothing, so a model whose only transfers
//! are all waiting lets another model in.
//!
//! The slot also holds the model's connection budget (`Connections`): the large files of one
//! model share `connections_per_file` connections between them, not that many each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::OwnedSemaphorePermit;

use super::Http;

/// One model's share of the download permits; one per model fetch.
#[derive(Debug, Default)]
pub struct ModelSlot {
    held: Mutex<Held>,
    /// Only one of the model's files waits for the permit; the others wait for it here.
    taking: tokio::sync::Mutex<()>,
    /// The connections of the model's parallel (ranged) downloads.
    pub connections: Connections,
}

/// The connections one model's ranged downloads hold. Each file's first connection is always
/// granted (`max_parallel_files` bounds those); more only while the model holds fewer than
/// its budget. So shards transferring at the same time each stay on one connection, in order,
/// hashed from memory (no byte read back), instead of each ramping up to the budget; a shard
/// left alone at the end may ramp up again.
#[derive(Debug, Default)]
pub struct Connections {
    in_use: AtomicUsize,
}

/// One connection counted in its model's budget, until dropped.
#[derive(Debug)]
pub struct Lease<'a> {
    connections: &'a Connections,
}

impl Connections {
    /// A file's first connection: granted whatever the others hold.
    pub fn first(&self) -> Lease<'_> {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Lease { connections: self }
    }

    /// One more connection while the model holds fewer than `budget`.
    pub fn another(&self, budget: usize) -> Option<Lease<'_>> {
        let below = |n: usize| (n < budget).then_some(n + 1);
        self.in_use.fetch_update(Ordering::Relaxed, Ordering::Relaxed, below).ok()?;
        Some(Lease { connections: self })
    }

    /// Connections held now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.connections.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Held {
    transfers: usize,
    permit: Option<OwnedSemaphorePermit>,
}

/// One transfer's hold on its model's slot.
#[derive(Debug)]
pub struct Transfer<'a> {
    slot: &'a ModelSlot,
}

impl ModelSlot {
    /// Waits until the model has a download permit (at once when another of its files holds
    /// it), and counts this transfer as holding it.
    pub async fn transfer(&self, http: &Http) -> Transfer<'_> {
        if self.join() {
            return Transfer { slot: self };
        }
        let _taking = self.taking.lock().await;
        if self.join() {
            return Transfer { slot: self };
        }
        let permit = http.download_permit().await;
        let mut held = self.held.lock().expect("slot lock");
        held.permit = Some(permit);
        held.transfers += 1;
        Transfer { slot: self }
    }

    /// Counts one more transfer when the permit is held already.
    fn join(&self) -> bool {
        let mut held = self.held.lock().expect("slot lock");
        if held.permit.is_some() {
            held.transfers += 1;
            true
        } else {
            false
        }
    }

    /// Whether the model holds a download permit now.
    #[cfg(test)]
    fn is_held(&self) -> bool {
        self.held.lock().expect("slot lock").permit.is_some()
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        let mut held = self.slot.held.lock().expect("slot lock");
        held.transfers -= 1;
        if held.transfers == 0 {
            held.permit = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn http(models: usize) -> Http {
        let text = format!("index = \"/i.json\"\nmax_parallel_models = {models}\n");
        let config = Config::parse(std::path::Path::new("/c.toml"), &text).expect("config");
        Http::new(&config, Ok(None)).expect("http")
    }

    #[test]
    fn the_files_of_one_model_share_one_connection_budget() {
        let slot = ModelSlot::default();
        let budget = 4;
        // Four shards, one connection each: the budget is spent, none of them gets another.
        let firsts: Vec<_> = (0..4).map(|_| slot.connections.first()).collect();
        assert!(slot.connections.another(budget).is_none());
        // A fifth file still gets its first one (max_parallel_files bounds those).
        let fifth = slot.connections.first();
        assert_eq!(slot.connections.in_use(), 5);
        drop(fifth);
        drop(firsts);
        // The last shard alone may use the whole budget, and not more.
        let _last = slot.connections.first();
        let more: Vec<_> = (0..5).filter_map(|_| slot.connections.another(budget)).collect();
        assert_eq!(more.len(), 3);
        drop(more);
        assert_eq!(slot.connections.in_use(), 1, "a lease dropped gives its connection back");
    }

    #[tokio::test]
    async fn the_files_of_one_model_share_one_permit_and_give_it_back_together() {
        let http = http(1);
        let (a, b) = (ModelSlot::default(), ModelSlot::default());
        let first = a.transfer(&http).await;
        // A second file of the same model does not wait for a second permit.
        let second = tokio::time::timeout(std::time::Duration::from_secs(1), a.transfer(&http))
            .await
            .expect("a file of a model holding the slot starts at once");
        // Another model waits while any file of the first transfers.
        let other = b.transfer(&http);
        tokio::pin!(other);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut other).await.is_err(),
            "another model got a slot while every slot was held"
        );
        drop(first);
        assert!(a.is_held(), "the slot went back while a file still transfers");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut other).await.is_err(),
            "another model got the slot while a file of the first still transfers"
        );
        drop(second);
        assert!(!a.is_held());
        let _other = tokio::time::timeout(std::time::Duration::from_secs(1), other)
            .await
            .expect("the slot passes on once no file of the first model transfers");
    }
}
