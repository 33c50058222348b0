//! The HTTP surface: the router and its middleware stack; handlers, one module per resource;
//! extractors, error rendering and responses. Handlers are thin: they parse, call one use case
//! of [`crate::service`], and render.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod bearer;
pub mod docs;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod middleware;
pub mod oauth;
pub mod openapi;
pub mod organizations;
pub mod query;
pub mod request_id;
pub mod response;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn;
use axum::middleware::from_fn_with_state;

use crate::state::AppState;
use error::ApiError;
use extract::BODY_LIMIT_BYTES;
use middleware::{
    assign_request_id, method_not_allowed, not_found, observe, read_body_in_time,
    refuse_nul_in_uri, refuse_oversized_bodies, remember_route,
};

pub fn router(state: AppState) -> Router {
    let (routes, _) = openapi::routes().split_for_parts();
    routes
        // The reference page for people is not an operation of the API it documents.
        .merge(docs::router())
        // The web console: pages for people, calling the same use cases.
        .merge(crate::console::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside `remember_route`, so a replayed answer is still counted under its route.
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
        .route_layer(from_fn(remember_route))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(from_fn_with_state(state.clone(), read_body_in_time))
        .layer(from_fn(refuse_oversized_bodies))
        .layer(from_fn(refuse_nul_in_uri))
        .layer(from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(from_fn(assign_request_id))
        .with_state(state)
}

/// Answers every request with 400 `E_HTTPS_REQUIRED`, with a request id and the usual headers.
pub fn https_required_router() -> Router {
    Router::new()
        .fallback(|| async { ApiError::https_required() })
        .layer(from_fn(assign_request_id))
}
