//! `last_used_at` of API keys, coalesced: a token request only notes the time in memory, and a
//! background task writes what was noted every [`FLUSH_INTERVAL`] in one transaction. A key used
//! a thousand times a second costs one UPDATE per interval per node, not a thousand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyplane_core::ApiKeyId;
use keyplane_store::Store;

pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys remembered between flushes, at most; beyond it new keys wait for the next flush.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct UsageLog {
    pending: Mutex<HashMap<ApiKeyId, i64>>,
}

impl UsageLog {
    pub fn record(&self, id: ApiKeyId, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < CAPACITY || pending.contains_key(&id) {
            let entry = pending.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
    }

    /// Writes everything noted so far.
    pub async fn flush(&self, store: &dyn Store) {
        let used = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut used: Vec<(ApiKeyId, i64)> = pending.drain().collect();
            // One order on every node: concurrent flushes cannot deadlock on PostgreSQL.
            used.sort_unstable_by_key(|(id, _)| id.to_string());
            used
        };
        if used.is_empty() {
            return;
        }
        if let Err(error) = store.touch_api_keys(&used).await {
            tracing::warn!(%error, keys = used.len(), "recording key usage failed");
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until the task is aborted.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            ticks.tick().await;
            self.flush(store.as_ref()).await;
        }
    }
}
