//! Transport and errors (README, Behaviour): TLS, plain-HTTP refusal, headers, error bodies,
//! health, metrics.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, TestAppBuilder, assert_error, client_trusting};
use crate::on_both_stores;

on_both_stores!(
    serves_health_and_readiness_over_tls_with_the_security_headers,
    every_kind_of_rejection_is_a_json_error_body,
    counts_requests_by_route_and_status_in_metrics,
);

async fn serves_health_and_readiness_over_tls_with_the_security_headers(backend: Backend) {
    let app = TestApp::start(&backend).await;

    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(headers["cache-control"], "no-store");
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(request_id.len(), 32);
    assert!(
        request_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

async fn every_kind_of_rejection_is_a_json_error_body(backend: Backend) {
    let app = TestApp::start(&backend).await;

    let unknown = app.get("/api/v0/no-such-thing").await;
    assert_error(unknown, 404, "E_NOT_FOUND").await;

    let wrong_method = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD");
    assert_error(wrong_method, 405, "E_METHOD_NOT_ALLOWED").await;

    let oversized = app
        .post_raw(
            "/api/v0/anything",
            "application/json",
            vec![b' '; 1024 * 1024 + 1],
        )
        .await;
    assert_error(oversized, 413, "E_PAYLOAD_TOO_LARGE").await;
}

async fn counts_requests_by_route_and_status_in_metrics(backend: Backend) {
    let app = TestApp::start(&backend).await;
    for _ in 0..3 {
        assert_eq!(app.get("/healthz").await.status(), 200);
    }
    assert_eq!(app.get("/missing").await.status(), 404);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"keyplane_http_requests_total{method="GET",route="/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"keyplane_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"keyplane_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn keeps_a_sane_caller_request_id_and_replaces_an_unsafe_one() {
    let app = TestApp::start(&Backend::Sqlite).await;
    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "fdf56a29f4e8955f79c42e69850feaa1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        kept.headers()["x-request-id"],
        "fdf56a29f4e8955f79c42e69850feaa1"
    );

    let replaced = app
        .client
        .get(app.url("/no-route"))
        .header("x-request-id", "<script>")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let body = assert_error(replaced, 404, "E_NOT_FOUND").await;
    assert_eq!(body["request_id"], id.as_str());
}

/// Sends raw bytes to the server and reads until it closes the connection.
async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // Completes only because the server closes the connection after refusing.
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

fn split_response(raw: &str) -> (&str, serde_json::Value) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    (head, serde_json::from_str(body).expect("a JSON body"))
}

#[tokio::test]
async fn plain_http_on_the_https_port_is_refused_and_the_connection_closed() {
    let app = TestApp::start(&Backend::Sqlite).await;
    let addr: SocketAddr = ([127, 0, 0, 1], app.port).into();
    let raw = raw_exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body["code"], "E_HTTPS_REQUIRED");
    assert_eq!(body["status_code"], 400);
    // The pipelined second request was never served.
    assert_eq!(raw.matches("HTTP/1.1").count(), 1, "{raw}");
}

#[tokio::test]
async fn a_trusted_proxy_is_served_only_with_forwarded_proto_https() {
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()])
        .start()
        .await;
    let addr: SocketAddr = ([127, 0, 0, 1], app.port).into();

    let served = raw_exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = split_response(&served);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body["status"], "ok");

    let refused = raw_exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: http\r\n\r\n",
    )
    .await;
    let (head, body) = split_response(&refused);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body["code"], "E_HTTPS_REQUIRED");
}

#[tokio::test]
async fn an_untrusted_peer_is_refused_even_with_forwarded_proto_https() {
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|c| c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()])
        .start()
        .await;
    let addr: SocketAddr = ([127, 0, 0, 1], app.port).into();
    let refused = raw_exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .await;
    let (head, body) = split_response(&refused);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body["code"], "E_HTTPS_REQUIRED");
}

#[tokio::test]
async fn generates_a_self_signed_certificate_once_and_reuses_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let first = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(dir.path())
        .configure(|c| c.hostnames = vec!["keyplane.internal".into()])
        .start()
        .await;
    assert!(first.certificate.generated);
    assert_eq!(first.certificate.cert_path, dir.path().join("tls/cert.pem"));
    assert_eq!(first.certificate.sha256_fingerprint.len(), 32 * 3 - 1);
    // The certificate is valid for the default names, checked by a verifying client.
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}/healthz", first.port);
        assert_eq!(
            first.client.get(url).send().await.unwrap().status(),
            200,
            "{host}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["tls/key.pem", "master.key"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    let fingerprint = first.certificate.sha256_fingerprint.clone();
    first.stop().await;

    let second = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(dir.path())
        .start()
        .await;
    assert!(!second.certificate.generated);
    assert_eq!(second.certificate.sha256_fingerprint, fingerprint);
    // A client that trusted the first start's certificate still connects.
    let response = client_trusting(&second.certificate)
        .get(second.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn serves_a_configured_pem_certificate() {
    let dir = tempfile::TempDir::new().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("operator-cert.pem");
    let key_path = dir.path().join("operator-key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();

    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|c| {
            c.tls_cert = Some(cert_path.clone());
            c.tls_key = Some(key_path.clone());
        })
        .start()
        .await;
    assert!(!app.certificate.generated);
    assert_eq!(
        app.certificate.chain[0].as_ref(),
        certified.cert.der().as_ref()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert!(!app.data_dir().join("tls/cert.pem").exists());
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_cannot_connect() {
    let app = TestApp::start(&Backend::Sqlite).await;
    let stranger = reqwest::Client::new();
    assert!(stranger.get(app.url("/healthz")).send().await.is_err());
}

#[tokio::test]
async fn publishes_the_openapi_document_it_was_built_with() {
    let app = TestApp::start(&Backend::Sqlite).await;
    let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    let generated = serde_json::to_value(keyplane_server::http::openapi::document()).unwrap();
    assert_eq!(served, generated);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert!(served["paths"][path].is_object(), "{path} is documented");
    }
}

/// `/docs` is a reference page for people that loads only what the binary serves: the
/// vendored RapiDoc, byte for byte, and `/openapi.json`; its policy admits no other origin and
/// no script but that file.
#[tokio::test]
async fn the_reference_page_loads_nothing_from_another_host() {
    let app = TestApp::start(&Backend::Sqlite).await;
    let page = app.get("/docs").await;
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header("content-type").starts_with("text/html"));
    let policy = header("content-security-policy");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(!policy.contains("http"), "no other origin: {policy}");
    assert_eq!(header("x-frame-options"), "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"src="/docs/rapidoc-min.js""#));
    assert!(html.contains(r#"spec-url="/openapi.json""#));
    // RapiDoc would fetch its default font from Google's servers.
    assert!(html.contains(r#"load-fonts="false""#));
    assert!(
        !html.contains("http:") && !html.contains("https:") && !html.contains("//"),
        "every reference is to this server: {html}"
    );
    let script = app.get("/docs/rapidoc-min.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let vendored = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../third_party/rapidoc/rapidoc-min.js"),
    )
    .unwrap();
    assert_eq!(script.bytes().await.unwrap().as_ref(), vendored.as_slice());
}

/// The committed `openapi.json` is the document the code generates: a change to the API shows
/// up in review. `UPDATE_SNAPSHOTS=1` rewrites it.
#[test]
fn openapi_snapshot_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json");
    let generated = keyplane_server::http::openapi::document()
        .to_pretty_json()
        .unwrap()
        + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json is stale: run `UPDATE_SNAPSHOTS=1 cargo test -p keyplane-server openapi`"
    );
}
