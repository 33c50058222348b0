//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::http::JsonResponse;
use crate::http::error::ErrorBody;
use crate::http::{auth, health};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyplane",
        description = "Organizations, people, API keys and the tokens they buy. \
                       Wire-compatible with the fiskaly Management API v0.",
        license(name = "Apache-2.0"),
    ),
    paths(
        auth::authenticate, auth::fiskil_token, auth::jwks,
        health::healthz, health::readyz, health::metrics, openapi_json,
    ),
    components(schemas(ErrorBody, health::HealthStatus)),
    tags(
        (name = "auth", description = "Credentials in, tokens out"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document")))]
pub async fn openapi_json() -> JsonResponse<utoipa::openapi::OpenApi> {
    JsonResponse(document())
}
