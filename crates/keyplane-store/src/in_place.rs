//! Point reads on SQLite, run in place on the calling thread.
//!
//! sqlx runs every SQLite connection on a thread of its own, so each statement is a hand-off to
//! that thread and back: two thread switches, which on a small (virtual) machine cost several
//! times what the read itself does (BENCHMARKS.md). A lookup of one row by a unique index takes
//! a few microseconds in SQLite, well within what a task may run between two awaits, so those
//! reads call SQLite directly through rusqlite (the same bundled SQLite library as sqlx's).
//! Scans, pages and every write stay on sqlx's connection threads: writes wait for a disk flush
//! and must not hold up the runtime.
//!
//! The connections are read-only and, in WAL mode, never wait for the writer; each statement
//! reads the latest committed state, so a read after a write on this node sees that write. Only
//! a database that is locked outright (recovery after a crash, another process holding an
//! exclusive lock) makes a read wait, up to the busy timeout, on the calling thread.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};

use crate::StoreError;
use crate::rows::Bind;

/// Prepared statements kept per connection: more than the store has point reads.
const STATEMENT_CACHE: usize = 32;

#[derive(Debug)]
pub struct InPlace {
    slots: Vec<Mutex<Option<Connection>>>,
    /// Which busy connection to wait for when none is idle.
    next: AtomicUsize,
}

impl InPlace {
    /// Opens `count` read-only connections to the database at `path`, which must exist (the
    /// store creates and migrates it first).
    pub fn open(path: &Path, count: usize, busy_timeout: Duration) -> Result<Self, StoreError> {
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            // NO_MUTEX: each connection is used by one thread at a time, under its own lock.
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let connection =
                Connection::open_with_flags(path, flags).map_err(StoreError::rusqlite)?;
            connection
                .busy_timeout(busy_timeout)
                .map_err(StoreError::rusqlite)?;
            connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            slots.push(Mutex::new(Some(connection)));
        }
        Ok(Self {
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `sql` with `binds` and maps its first row, if any.
    pub fn fetch_optional<T>(
        &self,
        sql: &str,
        binds: &[Bind<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let slot = self.lend();
        let connection = slot
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        let mut statement = connection
            .prepare_cached(sql)
            .map_err(StoreError::rusqlite)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(binds))
            .map_err(StoreError::rusqlite)?;
        rows.next()
            .map_err(StoreError::rusqlite)?
            .map(map)
            .transpose()
    }

    /// The first idle connection, or, when every one is in use by another thread, the next in
    /// turn (each use lasts microseconds).
    fn lend(&self) -> MutexGuard<'_, Option<Connection>> {
        for slot in &self.slots {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        // A panic while mapping a row leaves the connection itself intact.
        self.slots[turn]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes every connection; later reads fail as unavailable.
    pub fn close(&self) {
        for slot in &self.slots {
            slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
    use sqlx::{ConnectOptions, Executor};

    use super::*;
    use crate::rows::Columns;

    async fn writer_and_reader() -> (tempfile::TempDir, SqliteConnection, InPlace) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let mut writer = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        writer
            .execute("CREATE TABLE t (id TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .await
            .unwrap();
        let reader = InPlace::open(&path, 2, Duration::from_secs(1)).unwrap();
        (dir, writer, reader)
    }

    fn value_of(reader: &InPlace, id: &str) -> Result<Option<String>, StoreError> {
        reader.fetch_optional(
            "SELECT value FROM t WHERE id = $1",
            &[Bind::Text(id)],
            |row| Columns::get::<String>(row, "value"),
        )
    }

    #[tokio::test]
    async fn each_read_sees_the_latest_commit_of_another_connection() {
        let (_dir, mut writer, reader) = writer_and_reader().await;
        assert_eq!(value_of(&reader, "a").unwrap(), None);
        writer
            .execute("INSERT INTO t VALUES ('a', 'first')")
            .await
            .unwrap();
        assert_eq!(value_of(&reader, "a").unwrap().as_deref(), Some("first"));
        // The cached statement must not keep the first read's snapshot open.
        writer
            .execute("UPDATE t SET value = 'second' WHERE id = 'a'")
            .await
            .unwrap();
        assert_eq!(value_of(&reader, "a").unwrap().as_deref(), Some("second"));
    }

    #[tokio::test]
    async fn connections_are_read_only_and_closed_ones_are_unavailable() {
        let (_dir, _writer, reader) = writer_and_reader().await;
        let write = reader.fetch_optional(
            "INSERT INTO t VALUES ($1, 'x') RETURNING id",
            &[Bind::Text("b")],
            |row| Columns::get::<String>(row, "id"),
        );
        assert!(matches!(write, Err(StoreError::Internal(_))));
        assert_eq!(value_of(&reader, "b").unwrap(), None);
        reader.close();
        assert!(matches!(
            value_of(&reader, "a"),
            Err(StoreError::Unavailable(_))
        ));
    }
}
