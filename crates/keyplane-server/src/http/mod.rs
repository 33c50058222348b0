//! The HTTP surface: the router, its middleware stack, and the handlers, one module per resource.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod bearer;
pub mod error;
pub mod extract;
pub mod health;
pub mod oauth;
pub mod openapi;
pub mod organizations;
pub mod query;
pub mod request_id;
pub mod users;

use std::net::IpAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppState;
use error::ApiError;
use extract::BODY_LIMIT_BYTES;

/// Who sent the request, as the listener saw it (or as a trusted proxy reported it).
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    pub ip: IpAddr,
}

/// Where a request came from, for the audit log: its request id (set by the outermost
/// middleware) and the client address (set by the listener). Never fails.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for crate::auth::RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            request_id: parts
                .extensions
                .get::<request_id::RequestId>()
                .map(|id| id.0.clone()),
            ip: parts.extensions.get::<ClientInfo>().map(|client| client.ip),
        })
    }
}

/// Serialises a value as the JSON body of a response, with the contract's content type.
pub fn json_body<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            )],
            bytes,
        )
            .into_response(),
        Err(error) => {
            ApiError::internal(format!("serialising a response: {error}")).into_response()
        }
    }
}

/// The body of a successful delete or removal: `{"deleted": true}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: bool,
}

impl Deleted {
    pub fn response() -> JsonResponse<Deleted> {
        JsonResponse(Deleted { deleted: true })
    }
}

/// A `200 OK` JSON response.
pub struct JsonResponse<T>(pub T);

impl<T: Serialize> IntoResponse for JsonResponse<T> {
    fn into_response(self) -> Response {
        json_body(&self.0)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(oauth::router())
        .merge(organizations::router())
        .merge(api_keys::router())
        .merge(audit::router())
        .merge(users::router())
        .merge(openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(remember_route))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        .layer(middleware::from_fn(refuse_oversized_bodies))
        .layer(middleware::from_fn(refuse_nul_in_uri))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(middleware::from_fn(request_id::assign_request_id))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND)
}

async fn method_not_allowed() -> ApiError {
    ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// The matched route template, carried out to `observe` on the response.
#[derive(Clone)]
struct RouteTemplate(MatchedPath);

async fn remember_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(path) = matched {
        response.extensions_mut().insert(RouteTemplate(path));
    }
    response
}

/// A percent-encoded NUL in the path or query is a 400 before any handler sees it: no
/// identifier, name or filter holds one, and PostgreSQL refuses NUL in text.
async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
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
async fn read_body_in_time(
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
async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
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
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
        method = crate::metrics::method_label(&method),
        route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}
