//! The listener: accepts TCP connections, serves TLS ones, and refuses plain HTTP with the
//! contract's `E_HTTPS_REQUIRED` error — except from a trusted TLS-terminating proxy that says
//! `X-Forwarded-Proto: https`. Stops accepting on shutdown and lets in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use axum::middleware;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::http::ClientInfo;
use crate::http::error::ApiError;
use crate::http::request_id;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a client may take to send its first byte and complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (slow-loris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Listener {
    pub tcp: TcpListener,
    pub tls: TlsAcceptor,
    pub router: Router,
    pub trusted_proxies: Arc<[IpNet]>,
    pub shutdown_timeout: Duration,
}

impl Listener {
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let graceful = GracefulShutdown::new();
        let refusal = https_required_router();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(connection) => connection,
                    Err(error) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let connection = Connection {
                peer,
                tls: self.tls.clone(),
                router: self.router.clone(),
                refusal: refusal.clone(),
                trusted_proxies: self.trusted_proxies.clone(),
                watcher: graceful.watcher(),
            };
            tokio::spawn(connection.handle(stream));
        }
        drop(self.tcp);
        tracing::info!("shutting down: finishing in-flight requests");
        if tokio::time::timeout(self.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
        }
    }
}

struct Connection {
    peer: SocketAddr,
    tls: TlsAcceptor,
    router: Router,
    refusal: Router,
    trusted_proxies: Arc<[IpNet]>,
    watcher: Watcher,
}

impl Connection {
    async fn handle(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        if first[0] == TLS_HANDSHAKE_RECORD {
            self.serve_tls(stream).await;
        } else {
            self.serve_plain(stream).await;
        }
    }

    async fn serve_tls(self, stream: TcpStream) {
        let Ok(Ok(tls_stream)) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(stream)).await
        else {
            return;
        };
        let client = ClientInfo { ip: self.peer.ip() };
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(client);
            router.clone().oneshot(request)
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
            .into_owned();
        let _ = self.watcher.watch(connection).await;
    }

    /// Plain HTTP on the HTTPS port: refused, unless a trusted proxy vouches for TLS.
    async fn serve_plain(self, stream: TcpStream) {
        let from_trusted_proxy = self
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&self.peer.ip()));
        let peer_ip = self.peer.ip();
        let (router, refusal) = (self.router, self.refusal);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let router = router.clone();
            let refusal = refusal.clone();
            async move {
                if from_trusted_proxy && forwarded_https(&request) {
                    let ip = forwarded_client(&request).unwrap_or(peer_ip);
                    request.extensions_mut().insert(ClientInfo { ip });
                    return router.oneshot(request).await;
                }
                let mut response: Response<Body> = refusal.oneshot(request).await?;
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Ok::<_, Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let _ = self.watcher.watch(connection).await;
    }
}

/// Answers every request with 400 `E_HTTPS_REQUIRED`, with a request id and the usual headers.
fn https_required_router() -> Router {
    Router::new()
        .fallback(|| async { ApiError::https_required() })
        .layer(middleware::from_fn(request_id::assign_request_id))
}

fn forwarded_https<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The client as the proxy saw it: the last `X-Forwarded-For` entry (the one our proxy added).
fn forwarded_client<B>(request: &Request<B>) -> Option<IpAddr> {
    request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse().ok())
}
