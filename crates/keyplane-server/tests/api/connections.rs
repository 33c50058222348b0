//! Connections are bounded: a flood of idle connections under a low open-file limit neither
//! exhausts the server's descriptors nor keeps others out for longer than the idle timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::durability::spawn_server_with;
use crate::helpers::{Backend, TestAppBuilder, client_trusting};

/// A TLS client that trusts exactly `certificate`, for hand-made requests.
fn tls_connector(certificate: &keyplane_server::infra::tls::CertificateInfo) -> TlsConnector {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(certificate.chain[0].clone()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Before: 235 idle TLS connections under `ulimit -n 256` took every descriptor, `/healthz`
/// was never answered, and the accept loop logged an error every 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_under_a_low_descriptor_limit_do_not_keep_others_out() {
    let dir = tempfile::TempDir::new().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (_server, port, _drain) = spawn_server_with(
        dir.path(),
        "json",
        "info",
        &["--idle-timeout", "2"],
        Some(256),
        Some(log.clone()),
    );
    let certificate = keyplane_server::infra::tls::load_or_generate(dir.path(), None, &[])
        .unwrap()
        .certificate;
    let connector = tls_connector(&certificate);

    // 300 clients complete the TLS handshake, then say nothing and hold on.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let connector = connector.clone();
        idle.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = tokio::time::timeout(Duration::from_secs(20), connector.connect(name, tcp))
                .await
                .ok()?
                .ok()?;
            Some(tls)
        }));
    }
    let mut held = Vec::new();
    for task in idle {
        if let Some(stream) = task.await.unwrap() {
            held.push(stream);
        }
    }
    assert!(!held.is_empty(), "the flood connected");

    // While they are still held open, a newcomer is served once idle slots are given back.
    let client = client_trusting(&certificate);
    let response = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("served while idle connections are held");
    assert_eq!(response.status(), 200);
    drop(held);

    let log = log.lock().unwrap().clone();
    assert!(log.contains("connection limit reached"), "{log}");
    let accept_errors = log.matches("accepting connections fails").count();
    assert!(accept_errors <= 2, "{accept_errors} accept warnings: {log}");
}

/// Before: the body timeout restarted with every byte, so a client sending one byte every 20 s
/// held its connection (and slot) for as long as it liked. Now the whole body must arrive
/// within the deadline (30 s, or the idle timeout when shorter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|config| config.idle_timeout = 2)
        .start()
        .await;
    let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tls_connector(&app.certificate)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    writer
        .write_all(
            b"POST /api/v0/auth HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        )
        .await
        .unwrap();
    // One byte every 0.5 s, each well within the idle timeout, for up to 20 s; the answer
    // must come long before.
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let finished_early = !trickle.is_finished();
    trickle.abort();
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        finished_early,
        "answered before the client stopped trickling"
    );
}

/// Before: SIGTERM closed idle keep-alive connections at once, so requests their clients had
/// just sent were reset (and some PUTs were not committed, which the client could not know).
/// Now every request sent before SIGTERM gets an answer, and `/readyz` says 503 from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_before_sigterm_are_answered() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::TempDir::new().unwrap();
    let (server, port, _drain) = spawn_server_with(dir.path(), "json", "info", &[], None, None);
    let certificate = keyplane_server::infra::tls::load_or_generate(dir.path(), None, &[])
        .unwrap()
        .certificate;
    let url = format!("https://localhost:{port}/healthz");
    let stopped = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        // HTTP/1.1 keep-alive: the case where a request can meet a closing connection.
        let root = reqwest::Certificate::from_der(certificate.chain[0].as_ref()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([root])
            .http1_only()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let (url, stopped) = (url.clone(), stopped.clone());
        clients.push(tokio::spawn(async move {
            let mut unanswered = Vec::new();
            for n in 0..2_000 {
                if stopped.load(Ordering::Acquire) {
                    break;
                }
                if let Err(error) = client.get(&url).send().await {
                    unanswered.push(format!("request {n}: {error:?}"));
                }
            }
            unanswered
        }));
    }
    // Let the clients get going, then stop the server while they are mid-flight.
    let probe = client_trusting(&certificate);
    for _ in 0..50 {
        assert_eq!(probe.get(&url).send().await.unwrap().status(), 200);
    }
    // Requests started from here on may meet a server that no longer accepts: only those
    // started before must all be answered.
    stopped.store(true, Ordering::Release);
    let pid = rustix::process::Pid::from_raw(server.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // From the signal on, readiness is refused on a connection that is still open.
    let mut readiness = Vec::new();
    for _ in 0..200 {
        match probe
            .get(format!("https://localhost:{port}/readyz"))
            .send()
            .await
        {
            Ok(response) => {
                readiness.push(response.status().as_u16());
                if response.status() == 503 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let mut unanswered = Vec::new();
    for client in clients {
        unanswered.extend(client.await.unwrap());
    }
    let exit = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::task::spawn_blocking(move || {
            let mut server = server;
            server.wait().map(|status| status.success())
        }),
    )
    .await;
    assert!(
        matches!(exit, Ok(Ok(Ok(true)))),
        "the server exits cleanly: {exit:?}"
    );
    assert_eq!(readiness.last(), Some(&503), "{readiness:?}");
    assert!(unanswered.is_empty(), "{unanswered:#?}");
}
