//! The API reference for people: `GET /docs` renders `/openapi.json` with RapiDoc, which is
//! vendored in `third_party/rapidoc` (MIT, unmodified) and served by the binary itself, so the
//! page loads nothing from another host. The page's own policy allows inline styles (RapiDoc's
//! components style themselves) but no script other than the vendored file, and no other origin.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// RapiDoc's bundle, as released (see `third_party/rapidoc/SOURCE`).
pub const RAPIDOC_JS: &[u8] = include_bytes!("../../../../third_party/rapidoc/rapidoc-min.js");

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keyplane API reference</title>
<script type="module" src="/docs/rapidoc-min.js"></script>
</head>
<body>
<rapi-doc spec-url="/openapi.json" theme="light" render-style="read" show-header="false"
  allow-server-selection="false" allow-authentication="true" allow-try="true" load-fonts="false"
  regular-font="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
  mono-font="ui-monospace, SFMono-Regular, Menlo, monospace"></rapi-doc>
</body>
</html>
"#;

/// What the page may load: its own origin only; inline styles for RapiDoc's components.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/rapidoc-min.js", get(script))
}

async fn page() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // The same bytes for the life of the binary.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        RAPIDOC_JS,
    )
        .into_response()
}
