//! Opening the configured store: the data directory, the master key, and the refusal to start
//! on a data directory that lost its database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyplane_core::secrets::{MasterKey, ServerSecrets};
use keyplane_store::{Bounded, PostgresOptions, PostgresStore, SqliteStore, Store};

use crate::config::StoreConfig;
use crate::infra::files::{ensure_private_database, ensure_private_dir, write_private_file};

use crate::startup_error::StartupError;

/// Opens the configured store and derives the server secrets.
///
/// With SQLite the master key lives in `<data_dir>/master.key` (0600), generated on first use.
/// With PostgreSQL it must be supplied: several nodes must share it, and a database dump must
/// reveal nothing usable on its own.
pub async fn open_store(
    config: &StoreConfig,
) -> Result<(Arc<dyn Store>, ServerSecrets), StartupError> {
    let data_dir = &config.data_dir;
    ensure_private_dir(data_dir).map_err(|source| StartupError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let database = data_dir.join("keyplane.db");
    if config.database_url.is_none() && !config.allow_new_database && !database.exists() {
        let earlier: Vec<&str> = ["master.key", "tls", "outbox"]
            .into_iter()
            .filter(|name| data_dir.join(name).exists())
            .collect();
        if !earlier.is_empty() {
            return Err(StartupError::MissingDatabase {
                path: database,
                found: earlier.join(", "),
            });
        }
    }
    let master_key = load_master_key(config)?;
    let store: Arc<dyn Store> = match &config.database_url {
        // Across a network, every operation is bounded on this side too: a connection to a
        // database that went silent mid-statement answers nothing until the kernel gives up.
        // The timeout end to end (connection and statements), and a little for the answer.
        Some(url) => Arc::new(Bounded::new(
            PostgresStore::connect(&PostgresOptions {
                url: url.clone(),
                max_connections: config.database_max_connections,
                acquire_timeout: config.database_timeout(),
            })
            .await?,
            config.database_timeout() + Duration::from_millis(500),
        )),
        None => {
            ensure_private_database(&database).map_err(|source| StartupError::DataDir {
                path: database.clone(),
                source,
            })?;
            Arc::new(SqliteStore::open(&database, config.database_timeout()).await?)
        }
    };
    Ok((store, master_key.derive()))
}

fn load_master_key(config: &StoreConfig) -> Result<MasterKey, StartupError> {
    let invalid = |source: &str, e: keyplane_core::secrets::InvalidMasterKey| {
        StartupError::MasterKey(format!("{source}: {e}"))
    };
    if let Some(text) = &config.master_key {
        return MasterKey::from_base64(text).map_err(|e| invalid("KEYPLANE_MASTER_KEY", e));
    }
    if let Some(path) = &config.master_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartupError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        return MasterKey::from_base64(&text).map_err(|e| invalid(&path.display().to_string(), e));
    }
    if config.database_url.is_some() {
        return Err(StartupError::MasterKey(
            "PostgreSQL needs a master key shared by every node: set KEYPLANE_MASTER_KEY or \
             --master-key-file (generate one with `keyplane keys generate-master-key`)"
                .into(),
        ));
    }
    let path = config.data_dir.join("master.key");
    generated_master_key(&path)
}

fn generated_master_key(path: &Path) -> Result<MasterKey, StartupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::from_base64(&text)
            .map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            write_private_file(path, format!("{}\n", key.to_base64()).as_bytes()).map_err(
                |source| StartupError::DataDir {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
            tracing::info!(path = %path.display(), "generated the master key");
            Ok(key)
        }
        Err(error) => Err(StartupError::MasterKey(format!(
            "cannot read {}: {error}",
            path.display()
        ))),
    }
}
