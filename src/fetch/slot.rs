//! The download slot of one model. `max_parallel_models` bounds the MODELS transferring at
//! once, not the files: the first file of a model to start a transfer takes one of the
//! `Http`'s download permits, the model's other files share it, and the last one to stop
//! gives it back. A file waiting for a retry holds nothing, so a model whose only transfers
//! are all waiting lets another model in.

use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;

use super::Http;

/// One model's share of the download permits; one per model fetch.
#[derive(Debug, Default)]
pub struct ModelSlot {
    held: Mutex<Held>,
    /// Only one of the model's files waits for the permit; the others wait for it here.
    taking: tokio::sync::Mutex<()>,
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
