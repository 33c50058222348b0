//! The routes and their OpenAPI 3.1 document, both generated from the handlers' annotations.

use keyplane_types::errors::ErrorBody;
use keyplane_types::health::HealthStatus;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::response::JsonResponse;
use crate::http::{api_keys, audit, auth, health, oauth, organizations, users};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyplane",
        description = "Organizations, people, API keys and the tokens they buy. \
                       Wire-compatible with the fiskaly Management API v0.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, HealthStatus)),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Credentials in, tokens out"),
        (name = "oauth2", description = "OAuth 2.0: token, introspection, revocation, metadata"),
        (name = "organizations", description = "Organizations and the ones they manage"),
        (name = "users", description = "People, their roles, and invitations"),
        (name = "audit", description = "The append-only audit log"),
        (name = "api-keys", description = "API keys, by name in your organization or by id in any you can see"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme management endpoints require.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route with its documentation. A handler's method and path are written once, in its
/// `#[utoipa::path]`, and serve both the router and this document.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(auth::router())
        .merge(oauth::router())
        .merge(organizations::router())
        .merge(api_keys::router())
        .merge(audit::router())
        .merge(users::router())
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of [`routes`], built once.
pub fn document() -> utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT
        .get_or_init(|| routes().split_for_parts().1)
        .clone()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document")))]
pub async fn openapi_json() -> JsonResponse<utoipa::openapi::OpenApi> {
    JsonResponse(document())
}
