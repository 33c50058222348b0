//! Organizations (README, "Organizations"). Handlers translate; [`crate::service::organizations`] decides.

use axum::extract::{Path, RawQuery, State};
use keyplane_core::organizations::{OrganizationFields, OrganizationOrder, OrganizationQuery};
use keyplane_core::records::Organization;
use keyplane_core::values::Env;
use keyplane_types::common::Deleted;
use keyplane_types::errors::ErrorBody;
use keyplane_types::organizations::{
    EnableEnv, OrganizationBody, OrganizationList, OrganizationResource,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::bearer::Bearer;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::query;
use crate::http::response::{self, JsonResponse};
use crate::service::context::RequestContext;
use crate::service::organizations::{self, OrganizationError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(retrieve, update, delete))
        .routes(routes!(enable_env))
}

impl From<OrganizationError> for ApiError {
    fn from(error: OrganizationError) -> Self {
        match error {
            OrganizationError::Invalid(error) => error.into(),
            OrganizationError::NotFound => {
                ApiError::not_found("E_ORGANIZATION_NOT_FOUND", "Organization not found.")
            }
            OrganizationError::Forbidden => {
                ApiError::forbidden("Your role does not allow managing organizations.")
            }
            OrganizationError::DeleteOwn => {
                ApiError::forbidden("An organization cannot delete itself.")
            }
            OrganizationError::ManagesOthers => ApiError::conflict(
                "The organization still manages organizations; delete those first.",
            ),
            OrganizationError::LiveNeedsManager => ApiError::forbidden(
                "env: a managed organization's LIVE env is enabled by the organization that manages it, when that one has LIVE itself.",
            ),
            OrganizationError::Concurrent => ApiError::changed_meanwhile("organization"),
            OrganizationError::Store(error) => error.into(),
        }
    }
}

/// An organization as the API shows it.
fn resource(o: Organization) -> OrganizationResource {
    OrganizationResource {
        _id: o.id.to_string(),
        _type: if o.managed_by.is_some() {
            "MANAGED_ORGANIZATION"
        } else {
            "ORGANIZATION"
        },
        _envs: o.envs,
        name: o.name,
        display_name: o.display_name,
        address_line1: o.address_line1,
        address_line2: o.address_line2,
        zip: o.zip,
        town: o.town,
        state: o.state,
        country_code: o.country_code,
        vat_id: o.vat_id,
        tax_number: o.tax_number,
        economy_id: o.economy_id,
        contact_person_id: o.contact_person_id,
        billing_address_id: o.billing_address_id,
        metadata: o.metadata,
        managed_by_organization_id: o.managed_by.map(|id| id.to_string()),
        created_at: o.created_at,
        created_by_user: o
            .created_by_user
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

/// A create or update body's fields, and the manager it names; a required field may not be
/// `null`.
fn into_fields(body: OrganizationBody) -> Result<(OrganizationFields, Option<String>), ApiError> {
    let required = |field: &str, value: Option<Option<String>>| match value {
        Some(None) => Err(ApiError::validation(field, "must not be null")),
        Some(Some(value)) => Ok(Some(value)),
        None => Ok(None),
    };
    let fields = OrganizationFields {
        name: required("name", body.name)?,
        address_line1: required("address_line1", body.address_line1)?,
        zip: required("zip", body.zip)?,
        town: required("town", body.town)?,
        country_code: required("country_code", body.country_code)?,
        display_name: body.display_name,
        address_line2: body.address_line2,
        state: body.state,
        vat_id: body.vat_id,
        tax_number: body.tax_number,
        economy_id: body.economy_id,
        contact_person_id: body.contact_person_id,
        billing_address_id: body.billing_address_id,
        metadata: body.metadata,
    };
    Ok((fields, body.managed_by_organization_id))
}

/// Retrieve an organization: the caller's own or one it manages.
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}", tag = "organizations",
    params(("organization_id" = String, Path, description = "Organization id (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization", body = OrganizationResource),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible to the caller", body = ErrorBody),
    ))]
pub async fn retrieve(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    Path(organization_id): Path<String>,
) -> Result<JsonResponse<OrganizationResource>, ApiError> {
    let organization = organizations::visible(&state, &actor, &organization_id).await?;
    Ok(JsonResponse(resource(organization)))
}

/// List the caller's organization and every organization it manages, at any depth.
#[utoipa::path(get, path = "/api/v0/organizations", tag = "organizations",
    params(
        ("limit" = Option<u32>, Query, description = "1–100, default 100"),
        ("offset" = Option<u64>, Query, description = "default 0"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page: the page after it, in the same order and with the same filters (repeat them); not with offset", example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX"),
        ("order_by" = Option<String>, Query, description = "name (default), created_at, town, zip, display_name"),
        ("order" = Option<String>, Query, description = "asc (default) or desc"),
        ("managed_by_organization_id" = Option<String>, Query, description = "only those managed by this one"),
        ("type" = Option<String>, Query, description = "ORGANIZATION or MANAGED_ORGANIZATION"),
        ("env" = Option<String>, Query, description = "TEST or LIVE: only those with this env"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of organizations", body = OrganizationList),
        (status = 400, description = "Invalid query; the message names the parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<OrganizationList>, ApiError> {
    let (mut managed_by, mut managed, mut env) = (None, None, None);
    let paging = query::parse(raw.as_deref(), &OrganizationOrder::ALL, |name, value| {
        match name {
            "managed_by_organization_id" => {
                let id = value.parse().map_err(|_| {
                    ApiError::validation("managed_by_organization_id", "must be a UUID")
                })?;
                query::set_once(&mut managed_by, name, id)?;
            }
            "type" => {
                let is_managed = match value {
                    "ORGANIZATION" => false,
                    "MANAGED_ORGANIZATION" => true,
                    _ => {
                        return Err(ApiError::validation(
                            "type",
                            "must be ORGANIZATION or MANAGED_ORGANIZATION",
                        ));
                    }
                };
                query::set_once(&mut managed, name, is_managed)?;
            }
            "env" => {
                let parsed: Env = value
                    .parse()
                    .map_err(|_| ApiError::validation("env", "must be TEST or LIVE"))?;
                query::set_once(&mut env, name, parsed)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let mut query = OrganizationQuery {
        order_by: paging.order_by,
        descending: paging.descending.unwrap_or(false),
        limit: paging.limit,
        offset: paging.offset,
        managed_by,
        managed,
        env,
        after: None,
    };
    // The list is the caller's organization and those below it.
    let cursors = query::Cursors::new(&state, actor.organization_id, &query);
    query.after = cursors.open(paging.cursor.as_deref())?;
    let page = organizations::list(&state, &actor, &query).await?;
    Ok(JsonResponse(OrganizationList {
        next_cursor: cursors.seal(page.next.as_ref()),
        data: page.items.into_iter().map(resource).collect(),
        count: page.count,
        _type: "ORGANIZATION_LIST",
    }))
}

/// Create an organization managed by `managed_by_organization_id` (default: the caller's own).
#[utoipa::path(post, path = "/api/v0/organizations", tag = "organizations",
    request_body = OrganizationBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "The new organization", body = OrganizationResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "`managed_by_organization_id` names no organization the caller can see", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    ApiJson(body): ApiJson<OrganizationBody>,
) -> Result<JsonResponse<OrganizationResource>, ApiError> {
    let (fields, manager) = into_fields(body)?;
    let organization =
        organizations::create(&state, &actor, &context, manager.as_deref(), fields).await?;
    Ok(JsonResponse(resource(organization)))
}

/// Change an organization's fields (not its manager). `null` clears an optional field.
#[utoipa::path(patch, path = "/api/v0/organizations/{organization_id}", tag = "organizations",
    params(("organization_id" = String, Path, description = "Organization id (UUID)")),
    request_body = OrganizationBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization", body = OrganizationResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
        (status = 409, description = "The organization changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(organization_id): Path<String>,
    ApiJson(body): ApiJson<OrganizationBody>,
) -> Result<JsonResponse<OrganizationResource>, ApiError> {
    let (fields, manager) = into_fields(body)?;
    if manager.is_some() {
        return Err(ApiError::validation(
            "managed_by_organization_id",
            "cannot be changed",
        ));
    }
    let organization = organizations::visible(&state, &actor, &organization_id).await?;
    let organization =
        organizations::update(&state, &actor, &context, organization, fields).await?;
    Ok(JsonResponse(resource(organization)))
}

/// Delete an organization the caller manages; 409 while it still manages organizations.
#[utoipa::path(delete, path = "/api/v0/organizations/{organization_id}", tag = "organizations",
    params(("organization_id" = String, Path, description = "Organization id (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted; its keys and tokens stop working", body = Deleted),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it, or it is the caller's own", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
        (status = 409, description = "It still manages organizations", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(organization_id): Path<String>,
) -> Result<JsonResponse<Deleted>, ApiError> {
    let organization = organizations::visible(&state, &actor, &organization_id).await?;
    organizations::delete(&state, &actor, &context, organization).await?;
    Ok(response::deleted())
}

/// Add an env (`{"env": "LIVE"}`) to an organization's `_envs`.
#[utoipa::path(post, path = "/api/v0/organizations/{organization_id}/enable-env", tag = "organizations",
    params(("organization_id" = String, Path, description = "Organization id (UUID)")),
    request_body = EnableEnv, security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization", body = OrganizationResource),
        (status = 400, description = "Invalid env", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
    ))]
pub async fn enable_env(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(organization_id): Path<String>,
    ApiJson(body): ApiJson<EnableEnv>,
) -> Result<JsonResponse<OrganizationResource>, ApiError> {
    let organization = organizations::visible(&state, &actor, &organization_id).await?;
    let organization =
        organizations::enable_env(&state, &actor, &context, organization, body.env).await?;
    Ok(JsonResponse(resource(organization)))
}
