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
    /// The first-run setup link, when the store was empty at start.
    setup_link: Option<String>,
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
        // On an empty store, the console's first-run page: its one-time link goes to this
        // terminal only (standard error, not the log, which may be shipped elsewhere).
        let setup_link = if state.store().has_organizations().await? {
            None
        } else {
            let token = state.arm_setup_token();
            Some(format!(
                "{}/console/setup#token={}",
                state.public_url(),
                token.expose()
            ))
        };
        if let Some(link) = &setup_link {
            tracing::info!("no organization yet: the setup link is printed on standard error");
            eprintln!(
                "\nKeyplane has no organization yet. Set it up in the browser (this link works once, until the server stops):\n\n    {link}\n"
            );
        }
        Ok(Self {
            listener,
            local_addr,
            state,
            tls,
            config,
            setup_link,
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

    /// The console's one-time setup link, when the store had no organization at start.
    pub fn setup_link(&self) -> Option<&str> {
        self.setup_link.as_deref()
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
