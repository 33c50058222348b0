//! The listener: accepts TCP connections, serves TLS ones, and refuses plain HTTP with the
//! API's `E_HTTPS_REQUIRED` error — except from a trusted TLS-terminating proxy that says
//! `X-Forwarded-Proto: https`. Stops accepting on shutdown and lets in-flight requests finish.
//!
//! Connections are bounded: at most `max_connections` at once (by default what the open-file
//! limit allows, less a reserve for the database and files), so that a flood of idle
//! connections cannot take the descriptors the server needs; each closes after `idle_timeout`
//! with no request in flight and no byte moving, so that held slots come back; a request's
//! headers must arrive within [`HEADER_READ_TIMEOUT`] and its body within [`BODY_TIMEOUT`].

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Who sent the request, as the listener saw it (or as a trusted proxy reported it).
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    pub ip: IpAddr,
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a client may take to send its first byte and complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (slow-loris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptors kept back from connections, for the database, the data directory and logs.
const RESERVED_DESCRIPTORS: u64 = 64;
/// How often a warning that keeps recurring (the connection limit, failing accepts) is logged.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The connection limit: `configured`, or with 0 what the open-file limit allows less a
/// reserve (at least 16, at most 100,000).
pub fn connection_limit(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(100_000);
    usize::try_from(
        open_files
            .saturating_sub(RESERVED_DESCRIPTORS)
            .clamp(16, 100_000),
    )
    .unwrap_or(100_000)
}

/// Logs a recurring warning at most once per [`WARNING_INTERVAL`].
#[derive(Default)]
struct Rare(Option<Instant>);

impl Rare {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|last| now - last < WARNING_INTERVAL) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

pub struct Listener {
    pub tcp: TcpListener,
    pub tls: TlsAcceptor,
    pub router: Router,
    /// What plain HTTP gets on the HTTPS port (not from a trusted proxy).
    pub refusal: Router,
    pub trusted_proxies: Arc<[IpNet]>,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Set when shutdown begins: `/readyz` answers 503 and HTTP/1.1 answers carry
    /// `Connection: close`.
    pub draining: Arc<AtomicBool>,
}

/// How long, after shutdown begins, connections may go on delivering requests their clients
/// already sent (each answered with `Connection: close`) before idle ones are closed.
const DRAIN: Duration = Duration::from_millis(500);

impl Listener {
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let graceful = GracefulShutdown::new();
        let refusal = self.refusal.clone();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let (mut limit_warning, mut accept_warning) = (Rare::default(), Rare::default());
        tracing::debug!(max_connections = self.max_connections, "connection limit");
        tokio::pin!(shutdown);
        loop {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    if limit_warning.due() {
                        tracing::warn!(
                            max_connections = self.max_connections,
                            "connection limit reached: new connections wait until one closes \
                             (--max-connections, --idle-timeout)"
                        );
                    }
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => slot.expect("never closed"),
                        () = &mut shutdown => break,
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(connection) => connection,
                    Err(error) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        if accept_warning.due() {
                            tracing::warn!(%error, "accepting connections fails; retrying every 50 ms");
                        }
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
                idle_timeout: self.idle_timeout,
                draining: self.draining.clone(),
            };
            tokio::spawn(async move {
                connection.handle(stream).await;
                drop(slot);
            });
        }
        // Stop accepting and stop looking ready; let requests already on their way arrive and
        // be answered (with `Connection: close`), then close what is idle and finish the rest.
        self.draining.store(true, Ordering::Release);
        drop(self.tcp);
        tracing::info!("shutting down: finishing in-flight requests");
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN, slots.acquire_many(all)).await;
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
    idle_timeout: Duration,
    draining: Arc<AtomicBool>,
}

impl Connection {
    /// How long a client may take for its first byte and the TLS handshake.
    fn handshake_timeout(&self) -> Duration {
        HANDSHAKE_TIMEOUT.min(self.idle_timeout)
    }

    async fn handle(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.handshake_timeout(), stream.peek(&mut first)).await {
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
            tokio::time::timeout(self.handshake_timeout(), self.tls.accept(stream)).await
        else {
            return;
        };
        let client = ClientInfo { ip: self.peer.ip() };
        let router = self.router;
        let io = IdleTimeout::new(tls_stream, self.idle_timeout);
        let in_flight = io.in_flight.clone();
        let draining = self.draining;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(client);
            let (router, busy) = (router.clone(), InFlight::start(&in_flight));
            let draining = draining.clone();
            async move {
                let version = request.version();
                let mut response = router.oneshot(request).await;
                if let Ok(response) = &mut response {
                    close_when_draining(&draining, version, response);
                }
                drop(busy);
                response
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(self.idle_timeout)
            .keep_alive_timeout(HANDSHAKE_TIMEOUT);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
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
        let (router, refusal, draining) = (self.router, self.refusal, self.draining);
        let io = IdleTimeout::new(stream, self.idle_timeout);
        let in_flight = io.in_flight.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let router = router.clone();
            let refusal = refusal.clone();
            let busy = InFlight::start(&in_flight);
            let draining = draining.clone();
            async move {
                let _busy = busy;
                if from_trusted_proxy && forwarded_https(&request) {
                    let ip = forwarded_client(&request).unwrap_or(peer_ip);
                    request.extensions_mut().insert(ClientInfo { ip });
                    let version = request.version();
                    let mut response = router.oneshot(request).await?;
                    close_when_draining(&draining, version, &mut response);
                    return Ok(response);
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
            .serve_connection(TokioIo::new(io), service);
        let _ = self.watcher.watch(connection).await;
    }
}

/// While draining, an HTTP/1 answer tells its client to close the connection (HTTP/2 clients
/// are sent GOAWAY by the graceful shutdown instead; `Connection` is not an HTTP/2 header).
fn close_when_draining(
    draining: &AtomicBool,
    version: axum::http::Version,
    response: &mut Response<Body>,
) {
    if draining.load(Ordering::Acquire) && version < axum::http::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

fn forwarded_https<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The client as the proxy saw it: the last `X-Forwarded-For` entry (the one our proxy added),
/// an address with or without a port. `None` without the header. An entry that is no address
/// names an unknown client: the unspecified address, which no allow-list holds, never the
/// proxy's own (which `--metrics-allow` may hold).
fn forwarded_client<B>(request: &Request<B>) -> Option<IpAddr> {
    let last = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .next_back()?
        .trim();
    let parsed = last
        .parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|address| address.ip()));
    Some(parsed.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
}

/// Counts a request in flight on its connection for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that fails its reads once it has been idle for `timeout`: no request in flight
/// and no byte read or written. The protocol then closes it, so a client that connects and
/// says nothing, or keeps a connection open unused, gives its slot back.
struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    in_flight: Arc<AtomicUsize>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            in_flight: Arc::default(),
        }
    }

    fn busy(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.busy();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.in_flight.load(Ordering::Acquire) > 0 => {
                // A request is being answered: idleness counts from when it is done.
                self.busy();
                Poll::Pending
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.busy();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.busy();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
