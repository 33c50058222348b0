//! The embedded default: one SQLite file in the data directory, in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives a crash of the process or the machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{Executor, Sqlite};

use crate::StoreError;
use crate::connections::{Connections, Lent};
use crate::engine::{Backend, Engine, SqlConnection, Statement, sqlx_query};
use crate::in_place::InPlace;
use crate::rows::{Bind, FromRow};

/// SQLite allows one writer at a time; writes go through one connection so they queue in the
/// process instead of failing with `SQLITE_BUSY`, while reads use several connections (WAL lets
/// readers proceed during a write). Both are [`Connections`], not sqlx pools. Reads of one row
/// by a unique key run in place ([`InPlace`]).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Arc<Connections>,
    reader: Arc<Connections>,
    in_place: Arc<InPlace>,
    /// The directory of the database, whose file system must have room for writes.
    directory: std::path::PathBuf,
    /// The database file as opened: if the path stops naming this file (deleted, or replaced),
    /// the store is writing to a file nobody will ever open again.
    file: Arc<DatabaseFile>,
}

#[derive(Debug)]
struct DatabaseFile {
    path: std::path::PathBuf,
    /// Device and inode of the file opened.
    identity: (u64, u64),
    /// Whether its loss was logged (once, loudly).
    lost: std::sync::atomic::AtomicBool,
}

impl DatabaseFile {
    fn open(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path)
            .map_err(|error| StoreError::unavailable(&format!("{}: {error}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
            lost: Default::default(),
        })
    }

    /// Unavailable when the path no longer names the file that was opened.
    fn check(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if same {
            return Ok(());
        }
        if !self.lost.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::error!(
                path = %self.path.display(),
                "the database file was deleted or replaced while the server ran: writes are \
                 refused (503) and /readyz answers 503; restore the file and restart"
            );
        }
        Err(StoreError::unavailable(
            "the database file was deleted or replaced",
        ))
    }
}

/// Free space below which the store reports that it cannot take writes: a nearly full disk
/// takes small writes and fails larger ones, so readiness must not wait for the first failure.
const MIN_FREE_BYTES: u64 = 256 * 1024;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// `timeout` bounds each wait: for a connection, and for a lock another connection or
    /// process holds; past it the caller gets `Unavailable`.
    pub async fn open(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Other processes (e.g. `keyplane bootstrap` beside a running server) may hold the
            // write lock briefly.
            .busy_timeout(timeout);
        let writer = Connections::open(&options, 1, timeout).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut *writer.get().await?)
            .await
            .map_err(StoreError::migration)?;
        // SQLite opens a database it cannot write read-only, and every later connection of this
        // process shares that state: starting so would answer 503 to every write until a
        // restart, even once the file system is writable again. Refuse instead.
        let writable =
            sqlx::query("UPDATE readiness_probe SET checked_at = checked_at WHERE id = 1")
                .execute(&mut *writer.get().await?)
                .await;
        if let Err(sqlx::Error::Database(error)) = &writable
            && error.code().as_deref() == Some("8")
        {
            return Err(StoreError::ReadOnly(path.display().to_string()));
        }
        writable.map_err(StoreError::sqlx)?;
        // SQLite reads run on the CPU (the pages are cached), so more readers than cores buy
        // nothing but memory: each connection keeps its own page cache (up to 2 MiB).
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        let reader = Connections::open(&options.read_only(true), readers, timeout).await?;
        let in_place = InPlace::open(path, readers, timeout)?;
        Ok(Self {
            writer: Arc::new(writer),
            reader: Arc::new(reader),
            in_place: Arc::new(in_place),
            file: Arc::new(DatabaseFile::open(path)?),
            directory: path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        })
    }
}

impl Engine for Sqlite {
    const NAME: &'static str = "sqlite";
}

impl Backend for SqliteStore {
    type Engine = Sqlite;
    type Lent<'a> = Lent<'a>;

    async fn read(&self) -> Result<Lent<'_>, StoreError> {
        self.reader.get().await
    }

    async fn write(&self) -> Result<Lent<'_>, StoreError> {
        self.file.check()?;
        self.writer.get_for_writing().await
    }

    /// One row by a unique key, read in place.
    async fn read_optional<T: FromRow>(
        &self,
        sql: &str,
        binds: &[Bind<'_>],
    ) -> Result<Option<T>, StoreError> {
        self.in_place
            .fetch_optional(sql, binds, |row| T::from_row(row))
    }

    /// Unavailable when the database file is gone or its file system has less than
    /// [`MIN_FREE_BYTES`] free.
    fn check_storage(&self) -> Result<(), StoreError> {
        self.file.check()?;
        let stats = rustix::fs::statvfs(&self.directory)
            .map_err(|error| StoreError::unavailable(&format!("statvfs: {error}")))?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        if free < MIN_FREE_BYTES {
            return Err(StoreError::unavailable(&format!(
                "the disk holding the database has {free} bytes free"
            )));
        }
        Ok(())
    }

    /// After a failed write probe the writer is reopened before its next use.
    fn write_probe_failed(&self) {
        self.writer.reopen_before_next_write();
    }

    async fn close_connections(&self) {
        self.writer.close().await;
        self.reader.close().await;
        self.in_place.close();
    }
}

/// Generated lists of values use `?`, as sqlx's query builder does for SQLite: a numbered
/// placeholder (`$n`) is a named parameter to SQLite, looked up by name as the statement is
/// prepared.
impl SqlConnection for SqliteConnection {
    type Row = SqliteRow;

    fn push_placeholder(sql: &mut String, _: usize) {
        sql.push('?');
    }

    async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, StoreError> {
        let done = Executor::execute(self, sqlx_query(statement)).await;
        Ok(done.map_err(StoreError::sqlx)?.rows_affected())
    }

    async fn fetch_all(&mut self, statement: &Statement<'_>) -> Result<Vec<SqliteRow>, StoreError> {
        Executor::fetch_all(self, sqlx_query(statement))
            .await
            .map_err(StoreError::sqlx)
    }

    async fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> Result<Option<SqliteRow>, StoreError> {
        Executor::fetch_optional(self, sqlx_query(statement))
            .await
            .map_err(StoreError::sqlx)
    }

    async fn fetch_one(&mut self, statement: &Statement<'_>) -> Result<SqliteRow, StoreError> {
        Executor::fetch_one(self, sqlx_query(statement))
            .await
            .map_err(StoreError::sqlx)
    }
}
