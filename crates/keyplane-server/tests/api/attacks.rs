//! Attacks found against the running server, kept as tests: each failed on the main of the day
//! it was found and must keep failing to work.

use crate::helpers::{Backend, TestApp, TestAppBuilder, assert_error};

/// Made-up methods are arbitrary tokens of any length. Each used to become a metric label kept
/// forever (and a log field): twenty 200 KB methods grew `/metrics` past 4 MB.
#[tokio::test]
async fn made_up_methods_cannot_grow_the_metrics() {
    let app = TestApp::start(&Backend::Sqlite).await;
    // HTTP/1.1, where the method is a token on the request line (HTTP/2 clients cap headers).
    let root = reqwest::Certificate::from_der(app.certificate.chain[0].as_ref()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .http1_only()
        .build()
        .unwrap();
    for n in 0..20 {
        let method = format!("M{n:06}{}", "0".repeat(200 * 1024));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.len() < 16 * 1024, "/metrics is {} bytes", text.len());
    assert!(!text.contains("M000001"), "a made-up method became a label");
    assert!(
        text.contains(
            r#"keyplane_http_requests_total{method="OTHER",route="/healthz",status="405"} 20"#
        ),
        "{text}"
    );
}

/// `/metrics` is for the operator's scraper, not for anyone who can reach the port.
#[tokio::test]
async fn metrics_are_refused_to_clients_outside_the_allowed_networks() {
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|config| config.metrics_allow = vec!["192.0.2.0/24".parse().unwrap()])
        .start()
        .await;
    assert_error(app.get("/metrics").await, 404, "E_NOT_FOUND").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}
