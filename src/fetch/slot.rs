//! The download slot of one model. `max_parallel_models` bounds the MODELS transferring at
//! once, not the files: the first file of a model to start a transfer takes one of the
//! `Http`'s download permits, the model's other files share it, and the last one to stop
//! gives it back. A file waiting for a retry holds nothing, so a model whose only transfers
//! are all waiting lets another model in.
//!
//! The slot also holds the model's connection budget (`Connections`): the large files of one
//! model share `connections_per_file` connections between them, not that many each.

use std::sync::Mutex;

use tokio::sync::{Notify, OwnedSemaphorePermit};

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

/// The connections one model's ranged downloads hold, at most `connections_per_file` while
/// there are no more files transferring than that. A file's first connection is granted while
/// the model holds fewer than the budget, or when all it holds are other files' first ones
/// (`max_parallel_files` bounds those); otherwise the file waits, and the other files' extra
/// connections end at their next range boundary to make room. More connections are granted
/// only while the model holds fewer than the budget and no file waits. So shards transferring
/// at the same time each stay on one connection, in order, hashed from memory (no byte read
/// back), instead of each ramping up to the budget; a shard left alone at the end may ramp up
/// again.
#[derive(Debug, Default)]
pub struct Connections {
    held: Mutex<Count>,
    /// Signalled whenever a lease is given back.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Count {
    firsts: usize,
    extras: usize,
    /// Files waiting for their first connection.
    waiting: usize,
}

impl Count {
    fn held(&self) -> usize {
        self.firsts + self.extras
    }
}

/// One connection counted in its model's budget, until dropped.
#[derive(Debug)]
pub struct Lease<'a> {
    connections: &'a Connections,
    first: bool,
}

/// A file counted as waiting for its first connection, until dropped (granted or cancelled).
struct Waiting<'a>(&'a Connections);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.count().waiting -= 1;
    }
}

impl Connections {
    fn count(&self) -> std::sync::MutexGuard<'_, Count> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A file's first connection, once the model holds fewer than `budget` or only first
    /// connections.
    pub async fn first(&self, budget: usize) -> Lease<'_> {
        let mut waiting = None;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut count = self.count();
                if count.held() < budget || count.extras == 0 {
                    count.firsts += 1;
                    drop(count); // before `waiting`, whose drop takes the lock
                    drop(waiting);
                    return Lease { connections: self, first: true };
                }
                if waiting.is_none() {
                    count.waiting += 1;
                    waiting = Some(Waiting(self));
                }
            }
            freed.await;
        }
    }

    /// One more connection while the model holds fewer than `budget` and no file waits.
    pub fn another(&self, budget: usize) -> Option<Lease<'_>> {
        let mut count = self.count();
        if count.held() >= budget || count.waiting > 0 {
            return None;
        }
        count.extras += 1;
        Some(Lease { connections: self, first: false })
    }

    /// Connections held now.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.count().held()
    }
}

impl Lease<'_> {
    /// Whether this connection should end at its range boundary: it is an extra one, and
    /// another file of the model waits for its first.
    pub fn wanted_back(&self) -> bool {
        !self.first && self.connections.count().waiting > 0
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut count = self.connections.count();
        if self.first {
            count.firsts -= 1;
        } else {
            count.extras -= 1;
        }
        drop(count);
        self.connections.freed.notify_waiters();
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

    #[tokio::test]
    async fn the_files_of_one_model_share_one_connection_budget() {
        let slot = ModelSlot::default();
        let (budget, now) = (4, std::time::Duration::from_millis(50));
        let connections = &slot.connections;
        // Four shards, one connection each: the budget is spent, none of them gets another.
        let mut firsts = Vec::new();
        for _ in 0..4 {
            firsts.push(tokio::time::timeout(now, connections.first(budget)).await.expect("granted"));
        }
        assert!(connections.another(budget).is_none());
        // A fifth file still gets its first one: only first ones are held (max_parallel_files
        // bounds those).
        let fifth = tokio::time::timeout(now, connections.first(budget)).await.expect("granted");
        assert_eq!(connections.in_use(), 5);
        drop(fifth);
        drop(firsts);
        // The last shard alone may use the whole budget, and not more.
        let last = connections.first(budget).await;
        let mut more: Vec<_> = (0..5).filter_map(|_| connections.another(budget)).collect();
        assert_eq!(more.len(), 3);
        assert!(!last.wanted_back() && !more[0].wanted_back());
        // Another shard starting now waits; the extra connections are wanted back, none is
        // granted meanwhile, and one given back lets it start: the budget holds.
        let next = connections.first(budget);
        tokio::pin!(next);
        assert!(tokio::time::timeout(now, &mut next).await.is_err(), "granted over the budget");
        assert!(more.iter().all(Lease::wanted_back) && !last.wanted_back());
        assert!(connections.another(budget).is_none(), "an extra granted while a file waits");
        more.pop();
        let next = tokio::time::timeout(now, next).await.expect("granted once an extra went back");
        assert_eq!(connections.in_use(), 4);
        assert!(!more[0].wanted_back(), "nobody waits any more");
        // A file that stops waiting (its download was cancelled) is not waited for.
        {
            let cancelled = connections.first(budget);
            tokio::pin!(cancelled);
            assert!(tokio::time::timeout(now, &mut cancelled).await.is_err());
            assert!(more[0].wanted_back());
        }
        assert!(!more[0].wanted_back());
        drop((more, next, last));
        assert_eq!(connections.in_use(), 0, "a lease dropped gives its connection back");
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
