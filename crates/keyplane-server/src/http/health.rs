//! Liveness, readiness and metrics for operators and load balancers.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_types::errors::ErrorBody;
use keyplane_types::health::HealthStatus;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::response::JsonResponse;
use crate::infra::listener::ClientInfo;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Serving", body = HealthStatus)))]
pub async fn healthz() -> JsonResponse<HealthStatus> {
    JsonResponse(HealthStatus { status: "ok" })
}

/// The database answers and stores writes (a cheap write, checked at most once a second), and
/// the server is not shutting down: send traffic here.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthStatus),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<JsonResponse<HealthStatus>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable());
    }
    state.store().ping().await?;
    if !state.store_writes().await {
        return Err(ApiError::unavailable());
    }
    Ok(JsonResponse(HealthStatus { status: "ready" }))
}

/// Prometheus metrics (OpenMetrics text): request counts and latencies by method, route
/// template and status. Only for clients in `--metrics-allow` (loopback by default); anyone
/// else gets 404.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
        (status = 404, description = "The client is not allowed to read metrics", body = ErrorBody),
    ))]
pub async fn metrics(
    State(state): State<AppState>,
    client: Option<Extension<ClientInfo>>,
) -> Response {
    if !client.is_some_and(|Extension(client)| state.may_read_metrics(client.ip)) {
        return ApiError::from_status(StatusCode::NOT_FOUND).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics().render(),
    )
        .into_response()
}
