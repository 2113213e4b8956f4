//! Open server streams per API key, counted in this process.
//!
//! Every open `StreamJob`, `SubmitAndStream` and `StreamBatch` call holds a task, a live
//! subscription and a buffer on this gateway, so one key may hold at most
//! `LLMJOBS_CLIENT_MAX_OPEN_STREAMS` of them here (per gateway process, not per fleet: each
//! process has its own memory to protect). A slot is taken when the call starts and given back
//! when the stream's watcher task ends (the stream ended, the client went away, or it stopped
//! reading and was ended): the watcher holds it, not the response stream, so a client that
//! reads nothing does not keep the slot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::Status;

/// Open streams per key in this process.
#[derive(Clone, Default)]
pub struct OpenStreams {
    open: Arc<Mutex<HashMap<String, u32>>>,
}

/// One open stream of a key; dropping it closes the slot.
#[must_use = "the slot closes when dropped"]
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl OpenStreams {
    /// Takes a slot for `key` when it holds fewer than `limit` (0: unlimited).
    ///
    /// Errors: RESOURCE_EXHAUSTED naming the limit when the key holds `limit` already.
    pub fn open(&self, key: &str, limit: u32) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.to_owned()).or_insert(0);
        if limit > 0 && *count >= limit {
            return Err(Status::resource_exhausted(format!(
                "this API key already has {limit} open streams on this server (the most \
                 LLMJOBS_CLIENT_MAX_OPEN_STREAMS allows); close one, or follow a batch's jobs \
                 with StreamBatch"
            )));
        }
        *count += 1;
        Ok(StreamSlot {
            open: self.open.clone(),
            key: key.to_owned(),
        })
    }

    /// Streams `key` has open now.
    pub fn count(&self, key: &str) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_limit_and_slots_come_back_when_dropped() {
        let streams = OpenStreams::default();
        let a = streams.open("k", 2).expect("a slot");
        let _b = streams.open("k", 2).expect("a slot");
        let refused = streams.open("k", 2).err().expect("over the limit");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Other keys are counted apart.
        let _other = streams.open("j", 2).expect("a slot");
        drop(a);
        assert_eq!(streams.count("k"), 1);
        let _c = streams.open("k", 2).expect("a slot");
        assert_eq!(streams.count("k"), 2);
    }

    #[test]
    fn zero_is_unlimited_and_empty_keys_are_forgotten() {
        let streams = OpenStreams::default();
        let slots: Vec<_> = (0..1000)
            .map(|_| streams.open("k", 0).expect("a slot"))
            .collect();
        assert_eq!(streams.count("k"), 1000);
        drop(slots);
        assert_eq!(streams.count("k"), 0);
        assert!(streams.open.lock().expect("not poisoned").is_empty());
    }
}
