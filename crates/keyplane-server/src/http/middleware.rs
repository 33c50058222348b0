//! The middleware every request passes, outermost first: the request id and security headers
//! (and the API's error body for any error a lower layer produced without one), panics
//! caught, metrics and the access log, NUL refused in the URI, oversized and slow bodies
//! refused; and the answers for unknown routes and methods.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::extract::BODY_LIMIT_BYTES;
use crate::http::request_id::{self, REQUEST_ID, RequestId, X_REQUEST_ID, generate, is_sane};
use crate::state::AppState;

pub async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = REQUEST_ID
        .scope(id.clone(), async move {
            let response = next.run(request).await;
            ensure_json_error(response)
        })
        .await;
    let headers = response.headers_mut();
    headers.insert(
        &X_REQUEST_ID,
        HeaderValue::from_str(&id).expect("sane ids are header-safe"),
    );
    add_security_headers(headers);
    response
}

/// Headers on every response, including the plain-HTTP refusal.
pub fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Most responses of a management API hold credentials or tenant data; none is cacheable.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// Replaces an error response that is neither JSON nor a console page (axum's defaults, tower
/// layers, panics) with the API's error body for its status, keeping headers that carry
/// meaning.
fn ensure_json_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // The console's own error pages (HTML) are answers in their own right.
    let is_rendered = content_type
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_rendered {
        return response;
    }
    let mut replacement = ApiError::from_status(status).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            replacement.headers_mut().insert(name, value.clone());
        }
    }
    replacement
}

/// An unknown address: the console's HTML page under its paths, the API's JSON body elsewhere.
pub async fn not_found(uri: Uri) -> Response {
    refuse(&uri, StatusCode::NOT_FOUND)
}

pub async fn method_not_allowed(uri: Uri) -> Response {
    refuse(&uri, StatusCode::METHOD_NOT_ALLOWED)
}

fn refuse(uri: &Uri, status: StatusCode) -> Response {
    if crate::console::owns(uri.path()) {
        crate::console::unknown(status)
    } else {
        ApiError::from_status(status).into_response()
    }
}

/// The matched route template, carried out to `observe` on the response.
#[derive(Clone)]
struct RouteTemplate(MatchedPath);

pub async fn remember_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(path) = matched {
        response.extensions_mut().insert(RouteTemplate(path));
    }
    response
}

/// A percent-encoded NUL in the path or query is a 400 before any handler sees it: no
/// identifier, name or filter holds one, and PostgreSQL refuses NUL in text.
pub async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
    let has_nul = |text: &str| {
        text.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    let uri = request.uri();
    for (part, text) in [("path", uri.path()), ("query", uri.query().unwrap_or(""))] {
        if has_nul(text) {
            return ApiError::validation(part, "NUL characters are not allowed").into_response();
        }
    }
    next.run(request).await
}

/// Reads the whole body (at most [`BODY_LIMIT_BYTES`]) before the request goes on, within
/// [`AppState::body_timeout`] in all: a client trickling its body a byte at a time holds its
/// connection for that long at most, not for as long as it keeps trickling.
pub async fn read_body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, BODY_LIMIT_BYTES);
    match tokio::time::timeout(state.body_timeout(), read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(error)) => {
            let too_large = error
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response()
            } else {
                ApiError::bad_request("The request body could not be read.").into_response()
            }
        }
        Err(_) => {
            let mut response = ApiError::from_status(StatusCode::REQUEST_TIMEOUT).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Answers 413 from the declared length, before anything reads the body.
pub async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT_BYTES as u64) {
        return ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    }
    next.run(request).await
}

/// Metrics and the access log line. Routes are logged by template, never with query strings.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.as_str())
        .unwrap_or("unmatched");
    let status = response.status().as_u16();
    state
        .metrics()
        .observe_request(&method, route, status, elapsed);
    tracing::info!(
        request_id = %request_id::current(),
        method = crate::infra::metrics::method_label(&method),
        route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}
