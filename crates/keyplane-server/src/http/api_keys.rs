//! API keys on both path styles of the API. Each handler only translates: the path style
//! picks the organization (`None`: the caller's own) and the key reference (name or id), and
//! [`crate::service::api_keys`] does the rest for both.

use axum::extract::{Path, RawQuery, State};
use keyplane_core::api_keys::{ApiKeyOrder, ApiKeyQuery};
use keyplane_core::records::{ApiKey, Organization};
use keyplane_core::secrets::PlainCredential;
use keyplane_core::values::ApiKeyKind;
use keyplane_types::api_keys::{
    ApiKeyList, ApiKeyResource, ListParams, PatchApiKey, PostApiKey, PutApiKey, RotateApiKey,
};
use keyplane_types::common::Deleted;
use keyplane_types::errors::ErrorBody;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::bearer::Bearer;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Scope};
use crate::http::query;
use crate::http::response::{self, JsonResponse};
use crate::service::access::Actor;
use crate::service::api_keys::{self, ApiKeyError, CreateRequest, KeyRef, UpdateRequest};
use crate::service::context::RequestContext;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_own))
        .routes(routes!(retrieve_own, create_own, update_own, delete_own))
        .routes(routes!(rotate_own))
        .routes(routes!(list_in, create_in))
        .routes(routes!(retrieve_in, update_in, delete_in))
        .routes(routes!(rotate_in))
}

impl From<ApiKeyError> for ApiError {
    fn from(error: ApiKeyError) -> Self {
        match error {
            ApiKeyError::Invalid(error) => error.into(),
            ApiKeyError::OrganizationNotFound => {
                ApiError::not_found("E_ORGANIZATION_NOT_FOUND", "Organization not found.")
            }
            ApiKeyError::NotFound => {
                ApiError::not_found("E_API_KEY_NOT_FOUND", "API key not found.")
            }
            ApiKeyError::Forbidden => {
                ApiError::forbidden("Your role does not allow managing API keys.")
            }
            ApiKeyError::AboveCallerRole => ApiError::forbidden(
                "role: a key's role cannot be above your own, and keys above your role cannot be changed, rotated or deleted by you.",
            ),
            ApiKeyError::EnvNotEnabled => ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "E_ENV_NOT_ENABLED",
                "kind: live keys need the organization's LIVE env (enable-env).",
            ),
            ApiKeyError::NameTaken => {
                ApiError::conflict("name: an API key with this name exists in the organization")
            }
            ApiKeyError::Concurrent => ApiError::changed_meanwhile("API key"),
            ApiKeyError::Store(error) => error.into(),
        }
    }
}

fn resource(
    key: ApiKey,
    organization: &Organization,
    secret: Option<PlainCredential>,
) -> ApiKeyResource {
    ApiKeyResource {
        _id: key.id.to_string(),
        _type: if organization.managed_by.is_some() {
            "MANAGED_API_KEY"
        } else {
            "API_KEY"
        },
        _envs: vec![key.kind.env()],
        key: key.public_key,
        name: key.name.into_string(),
        kind: key.kind,
        status: key.status,
        role: key.role,
        metadata: key.metadata,
        managed_by_organization_id: organization
            .managed_by
            .map(|id| id.to_string())
            .unwrap_or_default(),
        created_at: key.created_at,
        created_by_user: key
            .created_by_user
            .map(|id| id.to_string())
            .unwrap_or_default(),
        last_used_at: key.last_used_at,
        expires_at: key.expires_at,
        secret: secret.map(PlainCredential::into_string),
    }
}

/// The list query and its `cursor`, if any.
fn parse_list_query(raw: Option<&str>) -> Result<(ApiKeyQuery, Option<String>), ApiError> {
    let (mut kinds, mut statuses) = (Vec::new(), Vec::new());
    let paging = query::parse(raw, &ApiKeyOrder::ALL, |name, value| {
        match name {
            "kind" => query::add_values(&mut kinds, "kind", value)?,
            "status" => query::add_values(&mut statuses, "status", value)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let query = ApiKeyQuery {
        order_by: paging.order_by,
        descending: paging.descending.unwrap_or(false),
        limit: paging.limit,
        offset: paging.offset,
        kinds,
        statuses,
        after: None,
    };
    Ok((query, paging.cursor))
}

async fn list(
    state: &AppState,
    actor: &Actor,
    organization_id: Option<&str>,
    raw: Option<&str>,
) -> Result<JsonResponse<ApiKeyList>, ApiError> {
    let organization = api_keys::organization(state, actor, organization_id).await?;
    let (mut query, cursor) = parse_list_query(raw)?;
    let cursors = query::Cursors::new(state, organization.id, &query);
    query.after = cursors.open(cursor.as_deref())?;
    let page = api_keys::list(state, &organization, &query).await?;
    Ok(JsonResponse(ApiKeyList {
        next_cursor: cursors.seal(page.next.as_ref()),
        data: page
            .items
            .into_iter()
            .map(|key| resource(key, &organization, None))
            .collect(),
        count: page.count,
        _type: "API_KEY_LIST",
    }))
}

/// The organization and key a request's path names, in either style.
async fn located(
    state: &AppState,
    actor: &Actor,
    scope: &Scope,
) -> Result<(Organization, ApiKey), ApiError> {
    let key = match (scope.param("api_key_id"), scope.param("key_name")) {
        (Some(id), _) => KeyRef::Id(id),
        (None, name) => KeyRef::Name(name.unwrap_or_default()),
    };
    let organization = api_keys::organization(state, actor, scope.organization_id()).await?;
    let key = api_keys::find(state, &organization, key).await?;
    Ok((organization, key))
}

// One function per operation; each is served on both path styles by the two documented entry
// points below it, which differ only in their path (and so in their documentation).

async fn retrieve(
    state: AppState,
    actor: Actor,
    scope: Scope,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    let (organization, key) = located(&state, &actor, &scope).await?;
    Ok(JsonResponse(resource(key, &organization, None)))
}

async fn update(
    state: AppState,
    actor: Actor,
    context: RequestContext,
    scope: Scope,
    body: PatchApiKey,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    let (organization, key) = located(&state, &actor, &scope).await?;
    let request = UpdateRequest {
        status: body.status,
        role: body.role,
        metadata: body.metadata,
        expires_at: body.expires_at.map(Some),
    };
    let key = api_keys::update(&state, &actor, &context, key, request).await?;
    Ok(JsonResponse(resource(key, &organization, None)))
}

async fn delete(
    state: AppState,
    actor: Actor,
    context: RequestContext,
    scope: Scope,
) -> Result<JsonResponse<Deleted>, ApiError> {
    let (_, key) = located(&state, &actor, &scope).await?;
    api_keys::delete(&state, &actor, &context, key).await?;
    Ok(response::deleted())
}

async fn rotate(
    state: AppState,
    actor: Actor,
    context: RequestContext,
    scope: Scope,
    body: RotateApiKey,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    let (organization, key) = located(&state, &actor, &scope).await?;
    let (key, secret) = api_keys::rotate(
        &state,
        &actor,
        &context,
        key,
        body.grace_period_seconds,
        None,
    )
    .await?;
    Ok(JsonResponse(resource(key, &organization, Some(secret))))
}

/// Retrieve an API key
///  (the caller's own organization, key by name)
#[utoipa::path(get, path = "/api/v0/api-keys/{key_name}", tag = "api-keys",
    params(("key_name" = String, Path, description = "The key's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    ))]
pub async fn retrieve_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    scope: Scope,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    retrieve(state, actor, scope).await
}

/// Retrieve an API key
///  (any organization the caller can see, key by id)
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}/api-keys/{api_key_id}", tag = "api-keys",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("api_key_id" = String, Path, description = "API key id"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization or key, or not visible", body = ErrorBody),
    ))]
pub async fn retrieve_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    scope: Scope,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    retrieve(state, actor, scope).await
}

/// Change an API key's status, metadata or expiry
///  (the caller's own organization, key by name)
#[utoipa::path(patch, path = "/api/v0/api-keys/{key_name}", tag = "api-keys",
    params(("key_name" = String, Path, description = "The key's name")),
    request_body = PatchApiKey,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn update_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
    ApiJson(body): ApiJson<PatchApiKey>,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    update(state, actor, context, scope, body).await
}

/// Change an API key's status, metadata or expiry
///  (any organization the caller can see, key by id)
#[utoipa::path(patch, path = "/api/v0/organizations/{organization_id}/api-keys/{api_key_id}", tag = "api-keys",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("api_key_id" = String, Path, description = "API key id"),
    ),
    request_body = PatchApiKey,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization or key, or not visible", body = ErrorBody),
        (status = 409, description = "The key changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn update_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
    ApiJson(body): ApiJson<PatchApiKey>,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    update(state, actor, context, scope, body).await
}

/// Delete an API key; its tokens stop working
///  (the caller's own organization, key by name)
#[utoipa::path(delete, path = "/api/v0/api-keys/{key_name}", tag = "api-keys",
    params(("key_name" = String, Path, description = "The key's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = Deleted),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn delete_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
) -> Result<JsonResponse<Deleted>, ApiError> {
    delete(state, actor, context, scope).await
}

/// Delete an API key; its tokens stop working
///  (any organization the caller can see, key by id)
#[utoipa::path(delete, path = "/api/v0/organizations/{organization_id}/api-keys/{api_key_id}", tag = "api-keys",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("api_key_id" = String, Path, description = "API key id"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = Deleted),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization or key, or not visible", body = ErrorBody),
        (status = 409, description = "The key changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn delete_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
) -> Result<JsonResponse<Deleted>, ApiError> {
    delete(state, actor, context, scope).await
}

/// Give an API key a new secret; the old one works for the grace period
///  (the caller's own organization, key by name)
#[utoipa::path(post, path = "/api/v0/api-keys/{key_name}/rotate", tag = "api-keys",
    params(("key_name" = String, Path, description = "The key's name")),
    request_body = RotateApiKey,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn rotate_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
    ApiJson(body): ApiJson<RotateApiKey>,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    rotate(state, actor, context, scope, body).await
}

/// Give an API key a new secret; the old one works for the grace period
///  (any organization the caller can see, key by id)
#[utoipa::path(post, path = "/api/v0/organizations/{organization_id}/api-keys/{api_key_id}/rotate", tag = "api-keys",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("api_key_id" = String, Path, description = "API key id"),
    ),
    request_body = RotateApiKey,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization or key, or not visible", body = ErrorBody),
        (status = 409, description = "The key changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn rotate_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
    ApiJson(body): ApiJson<RotateApiKey>,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    rotate(state, actor, context, scope, body).await
}

/// List the caller's own organization's API keys.
#[utoipa::path(get, path = "/api/v0/api-keys", tag = "api-keys", params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of keys", body = ApiKeyList),
        (status = 400, description = "Invalid query; the message names the parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ))]
pub async fn list_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<ApiKeyList>, ApiError> {
    list(&state, &actor, None, raw.as_deref()).await
}

/// List the API keys of an organization the caller can see.
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}/api-keys", tag = "api-keys",
    params(("organization_id" = String, Path, description = "Organization id"), ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of keys", body = ApiKeyList),
        (status = 400, description = "Invalid query; the message names the parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
    ))]
pub async fn list_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    Path(organization_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<ApiKeyList>, ApiError> {
    list(&state, &actor, Some(&organization_id), raw.as_deref()).await
}

/// Create an API key named `key_name` in the caller's own organization. The secret is shown once.
#[utoipa::path(put, path = "/api/v0/api-keys/{key_name}", tag = "api-keys",
    params(("key_name" = String, Path, description = "`^[a-z0-9-]{3,30}$`")),
    request_body = PutApiKey, security(("bearer" = [])),
    responses(
        (status = 200, description = "The new key with its secret", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    ))]
pub async fn create_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(key_name): Path<String>,
    ApiJson(body): ApiJson<PutApiKey>,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    let organization = api_keys::organization(&state, &actor, None).await?;
    let request = CreateRequest {
        name: key_name,
        kind: body.kind,
        status: body.status,
        role: body.role,
        metadata: body.metadata,
        expires_at: body.expires_at,
    };
    let (key, secret) = api_keys::create(&state, &actor, &context, &organization, request).await?;
    Ok(JsonResponse(resource(key, &organization, Some(secret))))
}

/// Create an API key in an organization the caller can see. The secret is shown once.
#[utoipa::path(post, path = "/api/v0/organizations/{organization_id}/api-keys", tag = "api-keys",
    params(("organization_id" = String, Path, description = "Organization id")),
    request_body = PostApiKey, security(("bearer" = [])),
    responses(
        (status = 200, description = "The new key with its secret", body = ApiKeyResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "Role or env does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    ))]
pub async fn create_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(organization_id): Path<String>,
    ApiJson(body): ApiJson<PostApiKey>,
) -> Result<JsonResponse<ApiKeyResource>, ApiError> {
    let organization = api_keys::organization(&state, &actor, Some(&organization_id)).await?;
    let manager = organization
        .managed_by
        .map(|id| id.to_string())
        .unwrap_or_default();
    if let Some(given) = body.managed_by_organization_id.as_deref()
        && !given.is_empty()
        && given != manager
    {
        return Err(ApiError::validation(
            "managed_by_organization_id",
            "must be the organization's manager",
        ));
    }
    let request = CreateRequest {
        name: body.name,
        kind: body.kind.unwrap_or(ApiKeyKind::Test),
        status: body.status,
        role: body.role,
        metadata: body.metadata,
        expires_at: body.expires_at,
    };
    let (key, secret) = api_keys::create(&state, &actor, &context, &organization, request).await?;
    Ok(JsonResponse(resource(key, &organization, Some(secret))))
}
