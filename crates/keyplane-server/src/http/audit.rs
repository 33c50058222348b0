//! The audit log (README, "Audit log"): read-only, newest first, for any organization the caller
//! can see. Events are written by the operations they record, never through this API.

use axum::extract::{Path, RawQuery, State};
use keyplane_core::records::{AuditEvent, AuditQuery};
use keyplane_core::values::Env;
use keyplane_types::audit::{AuditEventList, AuditEventResource, Reference};
use keyplane_types::errors::ErrorBody;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::bearer::Bearer;
use crate::http::error::ApiError;
use crate::http::query;
use crate::http::response::JsonResponse;
use crate::service::audit::{self, AuditError};
use crate::service::organizations;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

fn resource(event: AuditEvent, envs: &[Env]) -> AuditEventResource {
    AuditEventResource {
        _id: event.id.to_string(),
        _type: "AUDIT_EVENT",
        _envs: envs.to_vec(),
        action: event.action,
        actor: Reference {
            kind: event.actor_type.as_str().to_owned(),
            id: event.actor_id,
        },
        organization_id: event.organization_id.to_string(),
        target: Reference {
            kind: event.target_type,
            id: Some(event.target_id),
        },
        request_id: event.request_id,
        ip: event.ip,
        created_at: event.created_at,
    }
}

/// Longest action name accepted in a filter.
const MAX_ACTION_LENGTH: usize = 64;

fn timestamp(field: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse()
        .ok()
        .filter(|t| *t >= 0)
        .ok_or_else(|| ApiError::validation(field, "must be unix seconds (≥ 0)"))
}

/// An organization's audit events, newest first (`order=asc` for oldest first).
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}/audit-events", tag = "audit",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("limit" = Option<u32>, Query, description = "1–100, default 100"),
        ("offset" = Option<u64>, Query, description = "default 0"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page: the page after it, in the same order and with the same filters (repeat them); not with offset", example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX"),
        ("order" = Option<String>, Query, description = "desc (default, newest first) or asc"),
        ("action" = Option<String>, Query, description = "repeated or comma-separated, e.g. auth.failed"),
        ("actor_id" = Option<String>, Query, description = "only events by this actor"),
        ("since" = Option<i64>, Query, description = "unix seconds, inclusive"),
        ("until" = Option<i64>, Query, description = "unix seconds, inclusive"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of events", body = AuditEventList),
        (status = 400, description = "Invalid query; the message names the parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    Path(organization_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<AuditEventList>, ApiError> {
    let organization = organizations::visible(&state, &actor, &organization_id).await?;
    let (mut actions, mut actor_id, mut since, mut until) =
        (Vec::<String>::new(), None, None, None);
    let paging = query::parse(raw.as_deref(), &[("created_at", ())], |name, value| {
        match name {
            "action" => {
                for part in value.split(',') {
                    if part.is_empty() || part.len() > MAX_ACTION_LENGTH {
                        return Err(ApiError::validation("action", "must be 1 to 64 characters"));
                    }
                    if actions.iter().any(|a| a == part) {
                        return Err(ApiError::validation(
                            "action",
                            format!("{part} is given twice"),
                        ));
                    }
                    actions.push(part.to_owned());
                }
            }
            "actor_id" => {
                if value.is_empty() || value.len() > 64 {
                    return Err(ApiError::validation(
                        "actor_id",
                        "must be 1 to 64 characters",
                    ));
                }
                query::set_once(&mut actor_id, name, value.to_owned())?;
            }
            "since" => query::set_once(&mut since, name, timestamp(name, value)?)?,
            "until" => query::set_once(&mut until, name, timestamp(name, value)?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ApiError::validation("since", "must not be after until"));
    }
    let mut query = AuditQuery {
        limit: paging.limit,
        offset: paging.offset,
        actions,
        actor_id,
        since,
        until,
        oldest_first: paging.descending == Some(false),
        after: None,
    };
    let cursors = query::Cursors::new(&state, organization.id, &query);
    query.after = cursors.open(paging.cursor.as_deref())?;
    let page = audit::list(&state, &actor, &organization, &query)
        .await
        .map_err(|error| match error {
            AuditError::Forbidden => {
                ApiError::forbidden("Your role does not allow reading the audit log.")
            }
            AuditError::Store(error) => error.into(),
        })?;
    Ok(JsonResponse(AuditEventList {
        next_cursor: cursors.seal(page.next.as_ref()),
        data: page
            .items
            .into_iter()
            .map(|event| resource(event, &organization.envs))
            .collect(),
        count: page.count,
        _type: "AUDIT_EVENT_LIST",
    }))
}
