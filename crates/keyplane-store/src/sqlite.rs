//! The embedded default: one SQLite file in the data directory, in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives a crash of the process or the machine.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

/// SQLite allows one writer at a time; writes go through a one-connection pool so they queue in
/// the process instead of failing with `SQLITE_BUSY`, while reads use several connections (WAL
/// lets readers proceed during a write).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Other processes (e.g. `keyplane bootstrap` beside a running server) may hold the
            // write lock briefly.
            .busy_timeout(Duration::from_secs(5));
        // A connection to a local file cannot go stale, so it is not pinged before each use:
        // sqlx's default test costs every query a second round trip to the connection's thread.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

crate::shared::impl_store!(SqliteStore, Sqlite, sqlx::sqlite::SqliteRow, "sqlite");
