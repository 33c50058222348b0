//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Router;
use axum::routing::get;
use keyplane_types::errors::ErrorBody;
use keyplane_types::health::HealthStatus;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    paths(
        auth::authenticate, auth::fiskil_token, auth::jwks,
        oauth::token, oauth::introspect, oauth::revoke, oauth::metadata,
        organizations::list, organizations::create, organizations::retrieve,
        organizations::update, organizations::delete, organizations::enable_env,
        api_keys::list_own, api_keys::create_own, api_keys::retrieve_own, api_keys::update_own,
        api_keys::delete_own, api_keys::rotate_own,
        api_keys::list_in, api_keys::create_in, api_keys::retrieve_in, api_keys::update_in,
        api_keys::delete_in, api_keys::rotate_in,
        audit::list,
        users::list_own, users::list_in, users::invite_own, users::invite_in,
        users::retrieve_own, users::retrieve_in, users::update_own, users::update_in,
        users::remove_own, users::remove_in, users::list_invitations, users::resend_invitation,
        users::revoke_invitation, users::accept,
        health::healthz, health::readyz, health::metrics, openapi_json,
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
