//! The store's one error type, classified so the HTTP layer can answer 503 or 409 correctly.
//! Its payloads are [`DatabaseError`]s, this crate's own type: no driver type (sqlx, rusqlite)
//! is part of the store's API. The classification of the drivers' errors happens here, once.

use std::error::Error;
use std::fmt;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; the caller should answer 503 and try later.
    #[error("the database is unavailable")]
    Unavailable(#[source] DatabaseError),
    /// A uniqueness rule was violated (e.g. a key name taken within its organization).
    #[error("conflicts with an existing record")]
    Conflict(#[source] DatabaseError),
    /// A record this write refers to is gone (a foreign key found nothing), e.g. an
    /// organization deleted while a request for it ran: the caller should answer 404.
    #[error("a record it refers to no longer exists")]
    ReferenceGone(#[source] DatabaseError),
    /// The database opened but cannot be written (a read-only file system or file): SQLite then
    /// stays read-only until reopened, so the server must not start on it.
    #[error("the database at {0} cannot be written (read-only file system or file)")]
    ReadOnly(String),
    /// `keyplane bootstrap` ran before, or the store already holds an organization.
    #[error("the store already has an organization")]
    AlreadyBootstrapped,
    /// A row holds a value the domain does not accept: a bug or a hand-edited database.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The schema could not be brought up to date.
    #[error("database migration failed")]
    Migration(#[source] DatabaseError),
    /// Anything else: a bug, logged and answered with 500.
    #[error("database error")]
    Internal(#[source] DatabaseError),
}

/// What the database or its driver reported. It displays (and debug-prints) as the driver's
/// error did and continues the driver error's own chain of sources, but names no driver type.
pub struct DatabaseError {
    message: String,
    driver: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl DatabaseError {
    /// A driver's error, shown as it shows itself.
    fn driver(error: impl Error + Send + Sync + 'static) -> Self {
        Self {
            message: error.to_string(),
            driver: Some(Box::new(error)),
        }
    }

    /// A reason found outside the driver.
    fn message(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            driver: None,
        }
    }

    /// The same message, without the driver's error (which cannot be cloned).
    fn copy(&self) -> Self {
        Self::message(self.message.clone())
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.driver {
            Some(driver) => fmt::Debug::fmt(driver, f),
            None => f.debug_tuple("DatabaseError").field(&self.message).finish(),
        }
    }
}

impl Error for DatabaseError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.driver.as_ref().and_then(|driver| driver.source())
    }
}

impl StoreError {
    /// Unavailable for a reason outside the database driver (e.g. a writer task has stopped).
    pub fn unavailable(reason: &str) -> StoreError {
        StoreError::Unavailable(DatabaseError::message(reason))
    }

    /// The same error for each caller whose write was part of one failed batch: the same class
    /// (so each still answers 503 or 500 rightly) and message; driver errors cannot be cloned.
    pub fn for_each_caller(&self) -> StoreError {
        match self {
            StoreError::Unavailable(error) => StoreError::Unavailable(error.copy()),
            StoreError::Conflict(error) => StoreError::Conflict(error.copy()),
            StoreError::ReferenceGone(error) => StoreError::ReferenceGone(error.copy()),
            StoreError::Internal(error) => StoreError::Internal(error.copy()),
            StoreError::AlreadyBootstrapped => StoreError::AlreadyBootstrapped,
            StoreError::ReadOnly(path) => StoreError::ReadOnly(path.clone()),
            StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
            StoreError::Migration(error) => StoreError::Internal(error.copy()),
        }
    }

    /// A failed migration.
    pub(crate) fn migration(error: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Migration(DatabaseError::driver(error))
    }

    /// An error of sqlx, classified: see [`SQLITE_UNAVAILABLE`] and the PostgreSQL codes below.
    pub(crate) fn sqlx(error: sqlx::Error) -> StoreError {
        let class: fn(DatabaseError) -> StoreError = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable,
            sqlx::Error::Database(db) => database_class(db.as_ref()),
            _ => StoreError::Internal,
        };
        class(DatabaseError::driver(error))
    }

    /// An error of the point reads SQLite runs in place ([`crate::in_place`]), classified like
    /// sqlx's: busy or locked past the busy timeout is unavailable, anything else internal.
    pub(crate) fn rusqlite(error: rusqlite::Error) -> StoreError {
        let busy = matches!(
            error.sqlite_error_code(),
            Some(
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::CannotOpen
            )
        );
        let wrapped = DatabaseError {
            message: format!("sqlite: {error}"),
            driver: Some(Box::new(error)),
        };
        if busy {
            StoreError::Unavailable(wrapped)
        } else {
            StoreError::Internal(wrapped)
        }
    }
}

/// SQLite's primary result codes that mean the store cannot serve now, though nothing is wrong
/// with the request: busy or locked past the busy timeout (5, 6), read-only (8), an I/O error
/// (10), the disk full (13), the file cannot be opened (14).
const SQLITE_UNAVAILABLE: [i32; 6] = [5, 6, 8, 10, 13, 14];

/// The class of an error the database itself reported.
fn database_class(db: &dyn sqlx::error::DatabaseError) -> fn(DatabaseError) -> StoreError {
    if db.is_unique_violation() {
        return StoreError::Conflict;
    }
    if db.is_foreign_key_violation() {
        return StoreError::ReferenceGone;
    }
    if let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        let code =
            sqlx::error::DatabaseError::code(sqlite).and_then(|code| code.parse::<i32>().ok());
        return match code.map(|code| code & 0xff) {
            Some(code) if SQLITE_UNAVAILABLE.contains(&code) => StoreError::Unavailable,
            _ => StoreError::Internal,
        };
    }
    match db.code().as_deref() {
        // PostgreSQL: connection exceptions (08xxx), the server shutting down (57P0x), too many
        // connections (53300), out of disk space (53100), a statement ended by
        // statement_timeout (57014, query_canceled), a session ended by
        // idle_in_transaction_session_timeout (25P03).
        Some(code)
            if code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code == "53100"
                || code == "57014"
                || code == "25P03" =>
        {
            StoreError::Unavailable
        }
        _ => StoreError::Internal,
    }
}
