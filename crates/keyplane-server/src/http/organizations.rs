//! Organizations (contract section 5). Retrieval for now; the rest of the section follows.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use keyplane_core::OrganizationId;
use keyplane_core::records::{Metadata, Organization};
use keyplane_core::values::Env;
use serde::Serialize;
use utoipa::ToSchema;

use crate::access;
use crate::app::AppState;
use crate::http::JsonResponse;
use crate::http::bearer::Bearer;
use crate::http::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v0/organizations/{organization_id}", get(retrieve))
}

/// An organization as the API shows it; unset optional fields are omitted.
#[derive(Serialize, ToSchema)]
pub struct OrganizationResource {
    pub _id: String,
    /// `ORGANIZATION`, or `MANAGED_ORGANIZATION` when managed by another.
    #[schema(example = "MANAGED_ORGANIZATION")]
    pub _type: &'static str,
    pub _envs: Vec<Env>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub town: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vat_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub economy_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_person_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_address_id: Option<String>,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by_organization_id: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_user: Option<String>,
}

impl From<Organization> for OrganizationResource {
    fn from(o: Organization) -> Self {
        Self {
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
            created_by_user: o.created_by_user.map(|id| id.to_string()),
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("E_ORGANIZATION_NOT_FOUND", "Organization not found.")
}

/// An organization the caller can see (its own, or one it manages), or 404.
pub async fn visible_organization(
    state: &AppState,
    caller: &access::Actor,
    id: &str,
) -> Result<Organization, ApiError> {
    let id: OrganizationId = id.parse().map_err(|_| not_found())?;
    if !access::can_see(state.store(), caller.organization_id, id).await? {
        return Err(not_found());
    }
    state.store().organization(id).await?.ok_or_else(not_found)
}

/// Retrieve an organization: the caller's own or one it manages.
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}", tag = "organizations",
    params(("organization_id" = String, Path, description = "Organization id (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization", body = OrganizationResource),
        (status = 401, description = "Missing or invalid bearer token", body = crate::http::error::ErrorBody),
        (status = 404, description = "No such organization, or not visible to the caller", body = crate::http::error::ErrorBody),
    ))]
pub async fn retrieve(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    Path(organization_id): Path<String>,
) -> Result<JsonResponse<OrganizationResource>, ApiError> {
    let organization = visible_organization(&state, &actor, &organization_id).await?;
    Ok(JsonResponse(organization.into()))
}
