//! The embedded default: one SQLite file in the data directory, in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives a crash of the process or the machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::connections::{Connections, Lent};

/// SQLite allows one writer at a time; writes go through one connection so they queue in the
/// process instead of failing with `SQLITE_BUSY`, while reads use several connections (WAL lets
/// readers proceed during a write). Both are [`Connections`], not sqlx pools.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Arc<Connections>,
    reader: Arc<Connections>,
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
        let writer = Connections::open(&options, 1).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut *writer.get().await?)
            .await?;
        let reader = Connections::open(&options.read_only(true), 8).await?;
        Ok(Self {
            writer: Arc::new(writer),
            reader: Arc::new(reader),
        })
    }

    async fn read(&self) -> Result<Lent<'_>, StoreError> {
        self.reader.get().await
    }

    async fn write(&self) -> Result<Lent<'_>, StoreError> {
        self.writer.get().await
    }

    async fn close_connections(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

crate::shared::impl_store!(SqliteStore, Sqlite, sqlx::sqlite::SqliteRow, "sqlite");
