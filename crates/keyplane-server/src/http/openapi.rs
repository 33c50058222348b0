//! The routes and their OpenAPI 3.1 document, both generated from the handlers' annotations.

use keyplane_types::errors::ErrorBody;
use keyplane_types::health::HealthStatus;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::http::Method;

use crate::http::idempotency::takes_idempotency_key;
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
    let mut routes = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(auth::router())
        .merge(oauth::router())
        .merge(organizations::router())
        .merge(api_keys::router())
        .merge(audit::router())
        .merge(users::router())
        .routes(routes!(openapi_json));
    document_idempotency(routes.get_openapi_mut());
    routes
}

/// Documents `Idempotency-Key` on every operation that takes it (the idempotency layer's own
/// rule, [`takes_idempotency_key`]): the request header, the `Idempotent-Replayed` header of a
/// replayed answer, and the 409 and 422 it may answer.
fn document_idempotency(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type,
    };

    let text = |min: usize, max: usize, pattern: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(min))
            .max_length(Some(max))
            .pattern(Some(pattern))
            .build()
    };
    let key = ParameterBuilder::new()
        .name(keyplane_core::idempotency::HEADER)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "1 to 255 printable ASCII characters (a UUID v4 is a good choice). The first \
             complete answer to this caller's request with this key is kept for 24 hours \
             (`--idempotency-ttl`); a retry with the same key, method, path and body gets it \
             again with `Idempotent-Replayed: true`, without the work being done twice. 400, \
             401, 403, 408, 413, 415, 429 and 5xx answers are not kept: a retry runs again.",
        ))
        .schema(Some(text(1, 255, "^[\\x20-\\x7E]+$")))
        .build();
    let replayed = HeaderBuilder::new()
        .schema(text(4, 4, "^true$"))
        .description(Some(
            "`true` when this is the kept answer to an earlier request with the same \
             `Idempotency-Key`.",
        ))
        .build();
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        for (method, operation) in [
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ] {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            if !takes_idempotency_key(&method, path) {
                continue;
            }
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(key.clone());
            let responses = &mut operation.responses.responses;
            for (status, response) in responses.iter_mut() {
                let kept = status
                    .parse()
                    .is_ok_and(keyplane_core::idempotency::is_kept);
                if let (true, RefOr::T(response)) = (kept, response) {
                    response
                        .headers
                        .insert("Idempotent-Replayed".into(), replayed.clone());
                }
            }
            match responses.get_mut("409") {
                Some(RefOr::T(conflict)) => conflict.description.push_str(
                    "; or `E_IDEMPOTENCY_IN_PROGRESS`: a request with this `Idempotency-Key` is \
                     still running",
                ),
                _ => {
                    responses.insert(
                        "409".into(),
                        error(
                            "`E_IDEMPOTENCY_IN_PROGRESS`: a request with this `Idempotency-Key` \
                             is still running; retry after `Retry-After`",
                        ),
                    );
                }
            }
            responses.insert(
                "422".into(),
                error(
                    "`E_IDEMPOTENCY_MISMATCH`: this `Idempotency-Key` was used with another \
                     method, path or body",
                ),
            );
        }
    }
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
