//! A fixed set of SQLite connections, each lent to one caller at a time.
//!
//! sqlx's pool tests a connection with a round trip to the connection's thread every time it is
//! returned ("ping on release"), on top of the query itself, and every round trip is a pair of
//! thread switches. On a small machine those switches were most of the cost of a read
//! (BENCHMARKS.md). A connection to a local file cannot go stale and an unfinished transaction
//! is rolled back by sqlx when it is dropped, so these connections are lent out as they are —
//! except a writer left inside a transaction that nothing will end (see
//! [`Connections::get_for_writing`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Database, Sqlite, TransactionManager};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::StoreError;

/// A connection on loan; it goes back when dropped.
pub type Lent<'a> = MappedMutexGuard<'a, SqliteConnection>;

#[derive(Debug)]
pub struct Connections {
    slots: Vec<Mutex<Option<SqliteConnection>>>,
    /// Which busy connection to wait for when none is idle.
    next: AtomicUsize,
    /// How to open a connection again.
    options: SqliteConnectOptions,
    /// How long a caller waits for a busy connection before it is told the store is unavailable.
    timeout: std::time::Duration,
    /// Set when the next writer must be reopened before use.
    suspect: std::sync::atomic::AtomicBool,
}

/// How deep in transactions sqlx believes a connection is.
fn transaction_depth(connection: &SqliteConnection) -> usize {
    <Sqlite as Database>::TransactionManager::get_transaction_depth(connection)
}

impl Connections {
    pub async fn open(
        options: &SqliteConnectOptions,
        count: usize,
        timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            slots.push(Mutex::new(Some(
                options.connect().await.map_err(StoreError::sqlx)?,
            )));
        }
        Ok(Self {
            slots,
            next: AtomicUsize::new(0),
            options: options.clone(),
            timeout,
            suspect: Default::default(),
        })
    }

    /// A connection to write with, outside any transaction. A transaction whose `COMMIT` or
    /// `ROLLBACK` failed (a full disk, an I/O error) can leave sqlx believing the connection is
    /// still inside it while SQLite has already rolled it back, or leave SQLite inside it: the
    /// next "transaction" would then be a savepoint of one that never commits, and its writes
    /// would be acknowledged yet never stored. A connection in that state is closed and opened
    /// again (SQLite rolls back whatever it held) before anyone writes with it.
    pub async fn get_for_writing(&self) -> Result<Lent<'_>, StoreError> {
        let mut connection = self.get().await?;
        let mut reopen = self.suspect.swap(false, Ordering::AcqRel);
        if transaction_depth(&connection) > 0 {
            // A rollback of a dropped transaction may still be queued on the connection's
            // thread: a round trip lets it run first.
            let answered = connection.ping().await.is_ok();
            if !answered || transaction_depth(&connection) > 0 {
                tracing::error!(
                    "the SQLite writer was left inside a failed transaction; reopening it"
                );
                reopen = true;
            }
        }
        if reopen {
            match self.options.connect().await {
                Ok(fresh) => {
                    let broken = std::mem::replace(&mut *connection, fresh);
                    let _ = broken.close().await;
                }
                Err(error) => {
                    self.suspect.store(true, Ordering::Release);
                    return Err(StoreError::sqlx(error));
                }
            }
        }
        Ok(connection)
    }

    /// Has the next writer reopened before use: a write failed in a way a fresh connection may
    /// not (SQLite opens a database it cannot write read-only, and stays so after the file
    /// system becomes writable again).
    pub fn reopen_before_next_write(&self) {
        self.suspect.store(true, Ordering::Release);
    }

    /// The first idle connection (so that a lightly loaded server keeps using the same warm
    /// one), or, when all are busy, the next in turn once it is free (waiters are served in
    /// order), within the timeout.
    pub async fn get(&self) -> Result<Lent<'_>, StoreError> {
        for slot in &self.slots {
            if let Ok(guard) = slot.try_lock() {
                return open(guard);
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        match tokio::time::timeout(self.timeout, self.slots[turn].lock()).await {
            Ok(guard) => open(guard),
            Err(_) => Err(StoreError::unavailable(
                "timed out waiting for a database connection",
            )),
        }
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
        let connections = Connections::open(&options, 2, std::time::Duration::from_secs(5))
            .await
            .unwrap();
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
