//! The store's one error type, classified so the HTTP layer can answer 503 or 409 correctly.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; the caller should answer 503 and try later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A uniqueness rule was violated (e.g. a key name taken within its organization).
    #[error("conflicts with an existing record")]
    Conflict(#[source] sqlx::Error),
    /// A record this write refers to is gone (a foreign key found nothing), e.g. an
    /// organization deleted while a request for it ran: the caller should answer 404.
    #[error("a record it refers to no longer exists")]
    ReferenceGone(#[source] sqlx::Error),
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
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Anything else: a bug, logged and answered with 500.
    #[error("database error")]
    Internal(#[source] sqlx::Error),
}

impl StoreError {
    /// Unavailable for a reason outside the database driver (e.g. a writer task has stopped).
    pub fn unavailable(reason: &str) -> StoreError {
        StoreError::Unavailable(sqlx::Error::Protocol(reason.to_owned()))
    }

    /// The same error for each caller whose write was part of one failed batch: the same class
    /// (so each still answers 503 or 500 rightly) and message; sqlx errors cannot be cloned.
    pub fn for_each_caller(&self) -> StoreError {
        let copy = |error: &sqlx::Error| sqlx::Error::Protocol(error.to_string());
        match self {
            StoreError::Unavailable(error) => StoreError::Unavailable(copy(error)),
            StoreError::Conflict(error) => StoreError::Conflict(copy(error)),
            StoreError::ReferenceGone(error) => StoreError::ReferenceGone(copy(error)),
            StoreError::Internal(error) => StoreError::Internal(copy(error)),
            StoreError::AlreadyBootstrapped => StoreError::AlreadyBootstrapped,
            StoreError::ReadOnly(path) => StoreError::ReadOnly(path.clone()),
            StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
            StoreError::Migration(error) => {
                StoreError::Internal(sqlx::Error::Protocol(error.to_string()))
            }
        }
    }
}

/// SQLite's primary result codes that mean the store cannot serve now, though nothing is wrong
/// with the request: busy or locked past the busy timeout (5, 6), read-only (8), an I/O error
/// (10), the disk full (13), the file cannot be opened (14).
const SQLITE_UNAVAILABLE: [i32; 6] = [5, 6, 8, 10, 13, 14];

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return StoreError::Conflict(error);
                }
                if db.is_foreign_key_violation() {
                    return StoreError::ReferenceGone(error);
                }
                if let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    let code = sqlx::error::DatabaseError::code(sqlite)
                        .and_then(|code| code.parse::<i32>().ok());
                    return match code.map(|code| code & 0xff) {
                        Some(code) if SQLITE_UNAVAILABLE.contains(&code) => {
                            StoreError::Unavailable(error)
                        }
                        _ => StoreError::Internal(error),
                    };
                }
                match db.code().as_deref() {
                    // PostgreSQL: connection exceptions (08xxx), the server shutting down (57P0x),
                    // too many connections (53300), out of disk space (53100), a statement ended
                    // by statement_timeout (57014, query_canceled), a session ended by
                    // idle_in_transaction_session_timeout (25P03).
                    Some(code)
                        if code.starts_with("08")
                            || code.starts_with("57P0")
                            || code == "53300"
                            || code == "53100"
                            || code == "57014"
                            || code == "25P03" =>
                    {
                        StoreError::Unavailable(error)
                    }
                    _ => StoreError::Internal(error),
                }
            }
            _ => StoreError::Internal(error),
        }
    }
}

/// Errors of the point reads SQLite runs in place ([`crate::in_place`]), classified like
/// sqlx's: busy or locked past the busy timeout is unavailable, anything else internal.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
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
        let wrapped = sqlx::Error::Protocol(format!("sqlite: {error}"));
        if busy {
            StoreError::Unavailable(wrapped)
        } else {
            StoreError::Internal(wrapped)
        }
    }
}
