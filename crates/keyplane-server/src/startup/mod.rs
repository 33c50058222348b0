//! Application assembly: opens the store, loads secrets and TLS material, binds the listener.
//! Production and tests start the same way: `Application::build(config)` then
//! `run_until_stopped`, with port 0 for tests.

pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::ServeConfig;
use crate::infra::listener::Listener;
use crate::infra::tls::{self, CertificateInfo, TlsSetup};

pub use crate::startup_error::StartupError;
use crate::state::AppState;
pub use store::open_store;

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
            refusal: crate::http::https_required_router(),
            trusted_proxies: self.config.trusted_proxies.clone().into(),
            shutdown_timeout: Duration::from_secs(self.config.shutdown_timeout),
            max_connections: crate::infra::listener::connection_limit(self.config.max_connections),
            idle_timeout: Duration::from_secs(self.config.idle_timeout),
            draining: self.state.draining_flag(),
        };
        let maintenance = tokio::spawn(self.state.clone().maintain_signing_keys());
        let purge = tokio::spawn(crate::service::idempotency::purge_periodically(
            self.state.clone(),
        ));
        let usage = tokio::spawn(self.state.usage_log().run(self.state.shared_store()));
        listener.serve(shutdown).await;
        maintenance.abort();
        purge.abort();
        usage.abort();
        self.state.flush_background_writes().await;
        self.state.store().close().await;
    }
}
