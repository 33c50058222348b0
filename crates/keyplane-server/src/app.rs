//! Application assembly: opens the store, loads secrets and TLS material, binds the listener.
//! Production and tests start the same way: `Application::build(config)` then
//! `run_until_stopped`, with port 0 for tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyplane_core::secrets::{MasterKey, ServerSecrets};
use keyplane_store::{Bounded, PostgresOptions, PostgresStore, SqliteStore, Store, StoreError};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::access::Subjects;
use crate::audit::AuditQueue;
use crate::auth::Throttles;
use crate::config::{ServeConfig, StoreConfig};
use crate::files::{ensure_private_database, ensure_private_dir, write_private_file};
use crate::group_commit::RefreshTokenWriter;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::server::Listener;
use crate::signing::{SigningError, SigningKeys};
use crate::tls::{self, CertificateInfo, TlsError, TlsSetup};
use crate::usage::UsageLog;

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

/// What every handler shares. Cloning is a reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    store: Arc<dyn Store>,
    secrets: ServerSecrets,
    signing_keys: SigningKeys,
    tokens: TokenSettings,
    metrics: Metrics,
    subjects: Subjects,
    throttles: Throttles,
    passwords: Passwords,
    audit_queue: AuditQueue,
    refresh_tokens: RefreshTokenWriter,
    usage: Arc<UsageLog>,
    mailer: Mailer,
    public_url: String,
    invitation_ttl: i64,
    metrics_allow: Vec<ipnet::IpNet>,
    /// Set when shutdown begins.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// How long a request's whole body may take to arrive.
    body_timeout: Duration,
    /// When the store was last probed for writes, and whether it stored the write.
    write_probe: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

/// Token lifetimes and rules, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct TokenSettings {
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    /// How long a spent refresh token may be presented again without revoking its family.
    pub reuse_grace: i64,
    /// Age at which the signing key is replaced; 0 for never.
    pub rotation_interval: i64,
}

impl AppState {
    pub async fn new(
        store: Arc<dyn Store>,
        secrets: ServerSecrets,
        config: &ServeConfig,
    ) -> Result<Self, StartupError> {
        let public_url = config.public_url.trim_end_matches('/').to_owned();
        let signing_keys = SigningKeys::load(
            store.as_ref(),
            &secrets,
            public_url,
            config.access_token_ttl,
        )
        .await?;
        let mailer = Mailer::new(
            config.smtp_url.as_deref(),
            &config.mail_from,
            config.store.data_dir.join("outbox"),
        )
        .map_err(|e| StartupError::Mail(e.to_string()))?;
        Ok(Self(Arc::new(StateInner {
            audit_queue: AuditQueue::spawn(store.clone()),
            refresh_tokens: RefreshTokenWriter::spawn(store.clone()),
            store,
            secrets,
            signing_keys,
            tokens: TokenSettings {
                access_ttl: config.access_token_ttl,
                refresh_ttl: config.refresh_token_ttl,
                reuse_grace: config.refresh_token_reuse_grace,
                rotation_interval: config.signing_key_rotation_interval,
            },
            metrics: Metrics::new(),
            subjects: Subjects::default(),
            throttles: Throttles::new(config.throttles.by_address, config.throttles.by_credential),
            passwords: Passwords::default(),
            usage: Arc::default(),
            mailer,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            invitation_ttl: config.invitation_ttl,
            metrics_allow: config.metrics_allow.clone(),
            write_probe: tokio::sync::Mutex::new(None),
            draining: Arc::default(),
            body_timeout: crate::server::BODY_TIMEOUT.min(Duration::from_secs(config.idle_timeout)),
        })))
    }

    /// The token issuer: the public URL without a trailing slash.
    pub fn issuer(&self) -> String {
        self.signing_keys().current().issuer().to_owned()
    }

    pub fn subjects(&self) -> &Subjects {
        &self.0.subjects
    }

    pub fn throttles(&self) -> &Throttles {
        &self.0.throttles
    }

    pub fn passwords(&self) -> &Passwords {
        &self.0.passwords
    }

    pub fn audit_queue(&self) -> &AuditQueue {
        &self.0.audit_queue
    }

    /// Stores refresh tokens by group commit.
    pub fn refresh_tokens(&self) -> &RefreshTokenWriter {
        &self.0.refresh_tokens
    }

    pub fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }

    /// How long invitation links work, in seconds.
    pub fn invitation_ttl(&self) -> i64 {
        self.0.invitation_ttl
    }

    /// Where clients reach this server, without a trailing slash.
    pub fn public_url(&self) -> &str {
        &self.0.public_url
    }

    pub fn usage(&self) -> &UsageLog {
        &self.0.usage
    }

    /// Writes what background writers hold: failure events and key usage. For shutdown and
    /// for tests that read the store right after a request.
    pub async fn flush_background_writes(&self) {
        self.audit_queue().flush().await;
        self.usage().flush(self.store()).await;
    }

    /// Every few seconds: reread the signing keys (other nodes may have rotated) and rotate when
    /// the current key is due. Runs until the server stops.
    async fn maintain_signing_keys(self) {
        let mut ticks = tokio::time::interval(crate::signing::RELOAD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let interval = self.token_settings().rotation_interval;
            if interval > 0 {
                match self
                    .signing_keys()
                    .rotate_if_due(self.store(), self.secrets(), interval)
                    .await
                {
                    Ok(Some(kid)) => tracing::info!(kid, "rotated the signing key"),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "signing key rotation failed"),
                }
            }
            if let Err(error) = self
                .signing_keys()
                .reload(self.store(), self.secrets())
                .await
            {
                tracing::warn!(%error, "reloading signing keys failed");
            }
        }
    }

    pub fn signing_keys(&self) -> &SigningKeys {
        &self.0.signing_keys
    }

    pub fn token_settings(&self) -> TokenSettings {
        self.0.tokens
    }

    pub fn store(&self) -> &dyn Store {
        self.0.store.as_ref()
    }

    pub fn secrets(&self) -> &ServerSecrets {
        &self.0.secrets
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Whether the store stores writes: a write probe. A success is trusted for a second
    /// (callers in between share it); after a failure every call probes again, so readiness
    /// comes back as soon as the store does.
    pub async fn store_writes(&self) -> bool {
        const FRESH: Duration = Duration::from_secs(1);
        let mut probe = self.0.write_probe.lock().await;
        if let Some((at, true)) = *probe
            && at.elapsed() < FRESH
        {
            return true;
        }
        let result = self
            .store()
            .probe_write(keyplane_core::time::now_unix())
            .await;
        if let Err(error) = &result {
            tracing::warn!(%error, "the store does not take writes");
        }
        *probe = Some((std::time::Instant::now(), result.is_ok()));
        result.is_ok()
    }

    /// How long a request's whole body may take to arrive: 30 s, or the idle timeout when
    /// that is shorter.
    pub fn body_timeout(&self) -> Duration {
        self.0.body_timeout
    }

    /// Whether the server is shutting down (and so not ready for new traffic).
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a client at `ip` may read `/metrics`.
    pub fn may_read_metrics(&self, ip: std::net::IpAddr) -> bool {
        self.0.metrics_allow.iter().any(|net| net.contains(&ip))
    }
}

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

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    tls: TlsSetup,
    config: ServeConfig,
}

impl Application {
    pub async fn build(config: ServeConfig) -> Result<Self, StartupError> {
        let (store, secrets) = open_store(&config.store).await?;
        let tls = tls::load_or_generate(
            &config.store.data_dir,
            config.tls_cert.as_deref().zip(config.tls_key.as_deref()),
            &config.hostnames,
        )?;
        let certificate = &tls.certificate;
        tracing::info!(
            path = %certificate.cert_path.display(),
            sha256 = %certificate.sha256_fingerprint,
            generated = certificate.generated,
            "TLS certificate"
        );
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
        let state = AppState::new(store, secrets, &config).await?;
        tracing::info!(address = %local_addr, store = state.store().engine(), "listening for HTTPS");
        Ok(Self {
            listener,
            local_addr,
            state,
            tls,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn certificate(&self) -> &CertificateInfo {
        &self.tls.certificate
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) {
        let listener = Listener {
            tcp: self.listener,
            tls: TlsAcceptor::from(self.tls.server_config.clone()),
            router: crate::http::router(self.state.clone()),
            trusted_proxies: self.config.trusted_proxies.clone().into(),
            shutdown_timeout: Duration::from_secs(self.config.shutdown_timeout),
            max_connections: crate::server::connection_limit(self.config.max_connections),
            idle_timeout: Duration::from_secs(self.config.idle_timeout),
            draining: self.state.0.draining.clone(),
        };
        let maintenance = tokio::spawn(self.state.clone().maintain_signing_keys());
        let usage = tokio::spawn(self.state.0.usage.clone().run(self.state.0.store.clone()));
        listener.serve(shutdown).await;
        maintenance.abort();
        usage.abort();
        self.state.flush_background_writes().await;
        self.state.store().close().await;
    }
}
