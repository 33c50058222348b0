//! [`AppState`]: what every use case and handler shares (the store, secrets, signing keys,
//! caches, throttles, background writers and settings). It imports no handler and no use case,
//! so every layer can depend on it.

use std::sync::Arc;
use std::time::Duration;

use keyplane_core::records::SessionLimits;
use keyplane_core::secrets::{CredentialHash, CredentialKind, PlainCredential, ServerSecrets};
use keyplane_store::Store;

use crate::config::ServeConfig;
use crate::infra::audit_queue::AuditQueue;
use crate::infra::group_commit::RefreshTokenWriter;
use crate::infra::mail::Mailer;
use crate::infra::metrics::Metrics;
use crate::infra::passwords::Passwords;
use crate::infra::signing::SigningKeys;
use crate::infra::subjects::Subjects;
use crate::infra::throttle::Throttles;
use crate::infra::usage::UsageLog;

use crate::startup_error::StartupError;

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
    session_limits: SessionLimits,
    /// The keyed hash of the first-run setup token, while the store is empty and the link
    /// unused; only in this process's memory.
    setup_token: std::sync::Mutex<Option<CredentialHash>>,
    idempotency_ttl: i64,
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
    /// Lifetime of the access tokens of Fiskil's `/v1/token`.
    pub fiskil_ttl: i64,
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
            // A retired key stays published while any token it signed may be live.
            config.access_token_ttl.max(config.fiskil_token_ttl),
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
                fiskil_ttl: config.fiskil_token_ttl,
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
            session_limits: SessionLimits {
                idle: config.session_idle_timeout,
                lifetime: config.session_lifetime,
            },
            setup_token: std::sync::Mutex::new(None),
            idempotency_ttl: config.idempotency_ttl,
            metrics_allow: config.metrics_allow.clone(),
            write_probe: tokio::sync::Mutex::new(None),
            draining: Arc::default(),
            body_timeout: crate::infra::listener::BODY_TIMEOUT
                .min(Duration::from_secs(config.idle_timeout)),
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

    /// How long web console sessions last.
    pub fn session_limits(&self) -> SessionLimits {
        self.0.session_limits
    }

    /// Makes a new first-run setup token the only one that works, and returns it (to be shown
    /// once, on the server's terminal).
    pub fn arm_setup_token(&self) -> PlainCredential {
        let token = PlainCredential::generate();
        let hash = self
            .secrets()
            .hash_credential(CredentialKind::SetupToken, token.expose());
        *self.0.setup_token.lock().expect("not poisoned") = Some(hash);
        token
    }

    /// Whether `token` is the armed setup token (compared in constant time).
    pub fn is_setup_token(&self, token: &str) -> bool {
        let armed = self.0.setup_token.lock().expect("not poisoned").clone();
        armed.is_some_and(|hash| {
            self.secrets()
                .verify_credential(CredentialKind::SetupToken, token, &hash)
        })
    }

    /// Ends the setup token: it was used.
    pub fn disarm_setup_token(&self) {
        *self.0.setup_token.lock().expect("not poisoned") = None;
    }

    /// How long answers to writes with an `Idempotency-Key` are kept, in seconds.
    pub fn idempotency_ttl(&self) -> i64 {
        self.0.idempotency_ttl
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
    pub(crate) async fn maintain_signing_keys(self) {
        let mut ticks = tokio::time::interval(crate::infra::signing::RELOAD_INTERVAL);
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
    /// The flag the listener sets when shutdown begins.
    pub(crate) fn draining_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.0.draining.clone()
    }

    pub(crate) fn usage_log(&self) -> Arc<UsageLog> {
        self.0.usage.clone()
    }

    pub(crate) fn shared_store(&self) -> Arc<dyn Store> {
        self.0.store.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a client at `ip` may read `/metrics`.
    pub fn may_read_metrics(&self, ip: std::net::IpAddr) -> bool {
        self.0.metrics_allow.iter().any(|net| net.contains(&ip))
    }
}
