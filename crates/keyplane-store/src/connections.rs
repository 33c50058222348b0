//! A fixed set of SQLite connections, each lent to one caller at a time.
//!
//! sqlx's pool tests a connection with a round trip to the connection's thread every time it is
//! returned ("ping on release"), on top of the query itself, and every round trip is a pair of
//! thread switches. On a small machine those switches were most of the cost of a read
//! (BENCHMARKS.md). A connection to a local file cannot go stale and an unfinished transaction
//! is rolled back by sqlx when it is dropped, so these connections are lent out as they are.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::StoreError;

/// A connection on loan; it goes back when dropped.
pub type Lent<'a> = MappedMutexGuard<'a, SqliteConnection>;

#[derive(Debug)]
pub struct Connections {
    slots: Vec<Mutex<Option<SqliteConnection>>>,
    /// Which busy connection to wait for when none is idle.
    next: AtomicUsize,
}

impl Connections {
    pub async fn open(options: &SqliteConnectOptions, count: usize) -> Result<Self, StoreError> {
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            slots.push(Mutex::new(Some(options.connect().await?)));
        }
        Ok(Self {
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// The first idle connection (so that a lightly loaded server keeps using the same warm
    /// one), or, when all are busy, the next in turn once it is free (waiters are served in
    /// order).
    pub async fn get(&self) -> Result<Lent<'_>, StoreError> {
        for slot in &self.slots {
            if let Ok(guard) = slot.try_lock() {
                return open(guard);
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        open(self.slots[turn].lock().await)
    }

    /// Closes every connection once its current loan ends; later loans fail.
    pub async fn close(&self) {
        for slot in &self.slots {
            if let Some(connection) = slot.lock().await.take() {
                let _ = connection.close().await;
            }
        }
    }
}

fn open(guard: MutexGuard<'_, Option<SqliteConnection>>) -> Result<Lent<'_>, StoreError> {
    MutexGuard::try_map(guard, Option::as_mut)
        .map_err(|_| StoreError::unavailable("the store is closed"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn open_two() -> (tempfile::TempDir, Arc<Connections>) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("test.db"))
            .create_if_missing(true);
        let connections = Connections::open(&options, 2).await.unwrap();
        (dir, Arc::new(connections))
    }

    #[tokio::test]
    async fn lends_each_connection_to_one_caller_and_the_next_waits_for_a_return() {
        let (_dir, connections) = open_two().await;
        let first = connections.get().await.unwrap();
        let second = connections.get().await.unwrap();
        let third = tokio::spawn({
            let connections = connections.clone();
            async move {
                let mut connection = connections.get().await.unwrap();
                sqlx::query_scalar::<_, i64>("SELECT 7")
                    .fetch_one(&mut *connection)
                    .await
                    .unwrap()
            }
        });
        tokio::task::yield_now().await;
        // Both are lent, so the third caller cannot have one yet.
        assert!(!third.is_finished());
        drop(first);
        assert_eq!(third.await.unwrap(), 7);
        drop(second);
    }

    #[tokio::test]
    async fn closed_connections_are_not_lent() {
        let (_dir, connections) = open_two().await;
        connections.close().await;
        assert!(matches!(
            connections.get().await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
