//! Connections are bounded: a flood of idle connections under a low open-file limit neither
//! exhausts the server's descriptors nor keeps others out for longer than the idle timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::durability::spawn_server_with;
use crate::helpers::client_trusting;

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
    let certificate = keyplane_server::tls::load_or_generate(dir.path(), None, &[])
        .unwrap()
        .certificate;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(certificate.chain[0].clone()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));

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
