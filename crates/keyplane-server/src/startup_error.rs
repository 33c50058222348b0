//! Why the server could not start: each cause said once, in words an operator can act on.

use std::net::SocketAddr;
use std::path::PathBuf;

use keyplane_store::StoreError;

use crate::infra::signing::SigningError;
use crate::infra::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    MasterKey(String),
    #[error(
        "the data directory holds an earlier installation ({found}) but no database at {path}: \
         it was deleted or moved. Restore it, or start a new, empty one with --allow-new-database"
    )]
    MissingDatabase { path: PathBuf, found: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot load the signing keys: {0}")]
    Signing(#[from] SigningError),
    #[error("mail settings: {0}")]
    Mail(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}
