//! People and invitations on both path styles (README, "People and invitations"): the caller's organization
//! (`/users…`) or any organization it can see (`/organizations/{id}/users…`). Handlers translate;
//! [`crate::service::people`] decides.

use axum::extract::{Path, RawQuery, State};
use keyplane_core::records::{
    InvitationQuery, Membership, Organization, PendingInvitation, User, UserQuery,
};
use keyplane_core::values::{Env, Role, UserStatus};
use keyplane_types::common::Deleted;
use keyplane_types::errors::ErrorBody;
use keyplane_types::people::{
    AcceptBody, InvitationList, InvitationResource, InviteBody, UpdateUserBody, UserList,
    UserResource,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::bearer::Bearer;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Scope};
use crate::http::query;
use crate::http::response::{self, JsonResponse};
use crate::service::access::Actor;
use crate::service::context::RequestContext;
use crate::service::organizations;
use crate::service::people::{self, Invite, UserError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_own, invite_own))
        .routes(routes!(retrieve_own, update_own, remove_own))
        .routes(routes!(list_in, invite_in))
        .routes(routes!(retrieve_in, update_in, remove_in))
        .routes(routes!(list_invitations))
        .routes(routes!(accept))
        .routes(routes!(revoke_invitation))
        .routes(routes!(resend_invitation))
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::Invalid(error) => error.into(),
            UserError::NotFound => ApiError::not_found("E_USER_NOT_FOUND", "User not found."),
            UserError::InvitationNotFound => {
                ApiError::not_found("E_INVITATION_NOT_FOUND", "Invitation not found.")
            }
            UserError::Forbidden => ApiError::forbidden("Your role does not allow this."),
            UserError::AlreadyMember => {
                ApiError::conflict("email: this person already belongs to the organization")
            }
            UserError::LastOwner => ApiError::conflict(
                "The organization's last active owner cannot be removed, demoted or disabled.",
            ),
            UserError::InvalidInvitation => ApiError::validation(
                "token",
                "the invitation is invalid, already used, revoked or expired",
            ),
            UserError::Busy => ApiError::rate_limited(1),
            UserError::Concurrent => ApiError::changed_meanwhile("person"),
            UserError::Store(error) => error.into(),
        }
    }
}

/// The address of a pending invitation as the inviting organization sees it: lower case, so
/// that the spelling an existing account was registered with does not show through.
fn pending_email(email: &str) -> String {
    email.to_lowercase()
}

/// A person as one organization sees them. While their invitation is pending, the organization
/// sees only what it was told (the email and the names given in the invitation) and when it
/// invited them: nothing of the person's account elsewhere, if any.
fn user_resource(user: User, membership: &Membership, organization_envs: &[Env]) -> UserResource {
    let pending = membership.status == UserStatus::Invited;
    let (email, first_name, last_name, created_at) = if pending {
        (
            pending_email(user.email.as_str()),
            membership.invited_first_name.clone(),
            membership.invited_last_name.clone(),
            membership.created_at,
        )
    } else {
        (
            user.email.into_string(),
            user.first_name,
            user.last_name,
            user.created_at,
        )
    };
    UserResource {
        _id: user.id.to_string(),
        _type: "USER",
        _envs: organization_envs.to_vec(),
        email,
        first_name,
        last_name,
        role: membership.role,
        status: membership.status,
        created_at,
    }
}

fn invitation_resource(pending: PendingInvitation, envs: &[Env]) -> InvitationResource {
    let PendingInvitation {
        invitation,
        email,
        role,
    } = pending;
    InvitationResource {
        _id: invitation.id.to_string(),
        _type: "INVITATION",
        _envs: envs.to_vec(),
        organization_id: invitation.organization_id.to_string(),
        user_id: invitation.user_id.to_string(),
        email: pending_email(&email),
        role,
        created_at: invitation.created_at,
        expires_at: invitation.expires_at,
    }
}

async fn organization(
    state: &AppState,
    actor: &Actor,
    id: Option<&str>,
) -> Result<Organization, ApiError> {
    Ok(organizations::visible_or_own(state, actor, id).await?)
}

async fn list(
    state: &AppState,
    actor: &Actor,
    organization_id: Option<&str>,
    raw: Option<&str>,
) -> Result<JsonResponse<UserList>, ApiError> {
    let organization = organization(state, actor, organization_id).await?;
    let (mut statuses, mut roles) = (Vec::new(), Vec::new());
    let paging = query::parse(
        raw,
        &[("email", false), ("created_at", true)],
        |name, value| {
            match name {
                "status" => query::add_values(&mut statuses, "status", value)?,
                "role" => query::add_values(&mut roles, "role", value)?,
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    let mut query = UserQuery {
        by_created_at: paging.order_by,
        descending: paging.descending.unwrap_or(false),
        limit: paging.limit,
        offset: paging.offset,
        statuses,
        roles,
        after: None,
    };
    let cursors = query::Cursors::new(state, organization.id, &query);
    query.after = cursors.open(paging.cursor.as_deref())?;
    let page = people::list(state, &organization, &query).await?;
    Ok(JsonResponse(UserList {
        next_cursor: cursors.seal(page.next.as_ref()),
        data: page
            .items
            .into_iter()
            .map(|(user, membership)| user_resource(user, &membership, &organization.envs))
            .collect(),
        count: page.count,
        _type: "USER_LIST",
    }))
}

async fn invite(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    organization_id: Option<&str>,
    body: InviteBody,
) -> Result<JsonResponse<UserResource>, ApiError> {
    let organization = organization(state, actor, organization_id).await?;
    let request = Invite {
        email: body.email,
        first_name: body.first_name,
        last_name: body.last_name,
        role: body.role.unwrap_or(Role::Developer),
    };
    let (user, membership) = people::invite(state, actor, context, &organization, request).await?;
    Ok(JsonResponse(user_resource(
        user,
        &membership,
        &organization.envs,
    )))
}

async fn retrieve(
    state: &AppState,
    actor: &Actor,
    scope: &Scope,
) -> Result<JsonResponse<UserResource>, ApiError> {
    let organization = organization(state, actor, scope.organization_id()).await?;
    let user_id = scope.param("user_id").unwrap_or_default();
    let (user, membership) = people::find(state, &organization, user_id).await?;
    Ok(JsonResponse(user_resource(
        user,
        &membership,
        &organization.envs,
    )))
}

async fn update(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    scope: &Scope,
    body: UpdateUserBody,
) -> Result<JsonResponse<UserResource>, ApiError> {
    let organization = organization(state, actor, scope.organization_id()).await?;
    let user_id = scope.param("user_id").unwrap_or_default();
    let (user, membership) = people::find(state, &organization, user_id).await?;
    let membership =
        people::update(state, actor, context, membership, body.role, body.status).await?;
    Ok(JsonResponse(user_resource(
        user,
        &membership,
        &organization.envs,
    )))
}

async fn remove(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    scope: &Scope,
) -> Result<JsonResponse<Deleted>, ApiError> {
    let organization = organization(state, actor, scope.organization_id()).await?;
    let user_id = scope.param("user_id").unwrap_or_default();
    let (_, membership) = people::find(state, &organization, user_id).await?;
    people::remove(state, actor, context, membership).await?;
    Ok(response::deleted())
}

/// List the people of the caller's organization.
#[utoipa::path(get, path = "/api/v0/users", tag = "users",
    params(
        ("limit" = Option<u32>, Query, description = "1–100, default 100"),
        ("offset" = Option<u64>, Query, description = "default 0"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page: the page after it, in the same order and with the same filters (repeat them); not with offset", example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX"),
        ("order_by" = Option<String>, Query, description = "email (default) or created_at"),
        ("order" = Option<String>, Query, description = "asc (default) or desc"),
        ("status" = Option<String>, Query, description = "invited, active, disabled: repeated or comma-separated"),
        ("role" = Option<String>, Query, description = "owner, admin, developer, viewer: repeated or comma-separated"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of people", body = UserList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ))]
pub async fn list_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<UserList>, ApiError> {
    list(&state, &actor, None, raw.as_deref()).await
}

/// List the people of an organization the caller can see.
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}/users", tag = "users",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("limit" = Option<u32>, Query, description = "1–100, default 100"),
        ("offset" = Option<u64>, Query, description = "default 0"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page: the page after it, in the same order and with the same filters (repeat them); not with offset", example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX"),
        ("order_by" = Option<String>, Query, description = "email (default) or created_at"),
        ("order" = Option<String>, Query, description = "asc (default) or desc"),
        ("status" = Option<String>, Query, description = "invited, active, disabled: repeated or comma-separated"),
        ("role" = Option<String>, Query, description = "owner, admin, developer, viewer: repeated or comma-separated"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of people", body = UserList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
    ))]
pub async fn list_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    Path(organization_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<UserList>, ApiError> {
    list(&state, &actor, Some(&organization_id), raw.as_deref()).await
}

/// Invite a person into the caller's organization (status `invited`; a link is mailed).
#[utoipa::path(post, path = "/api/v0/users", tag = "users", request_body = InviteBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The invited person", body = UserResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody),
    ))]
pub async fn invite_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<JsonResponse<UserResource>, ApiError> {
    invite(&state, &actor, &context, None, body).await
}

/// Invite a person into an organization the caller can see.
#[utoipa::path(post, path = "/api/v0/organizations/{organization_id}/users", tag = "users",
    params(("organization_id" = String, Path, description = "Organization id")),
    request_body = InviteBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "The invited person", body = UserResource),
        (status = 400, description = "Invalid input; the message names the field", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody),
    ))]
pub async fn invite_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(organization_id): Path<String>,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<JsonResponse<UserResource>, ApiError> {
    invite(&state, &actor, &context, Some(&organization_id), body).await
}

/// Retrieve a person of the caller's organization.
#[utoipa::path(get, path = "/api/v0/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The person", body = UserResource),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such person in the organization", body = ErrorBody),
    ))]
pub async fn retrieve_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    scope: Scope,
) -> Result<JsonResponse<UserResource>, ApiError> {
    retrieve(&state, &actor, &scope).await
}

/// Retrieve a person of an organization the caller can see.
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}/users/{user_id}", tag = "users",
    params(("organization_id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The person", body = UserResource),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such organization or person, or not visible", body = ErrorBody),
    ))]
pub async fn retrieve_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    scope: Scope,
) -> Result<JsonResponse<UserResource>, ApiError> {
    retrieve(&state, &actor, &scope).await
}

/// Change a person's role or status in the caller's organization (owners only change owners).
#[utoipa::path(patch, path = "/api/v0/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "User id")),
    request_body = UpdateUserBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "The person", body = UserResource),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such person in the organization", body = ErrorBody),
        (status = 409, description = "It would leave no active owner, or the person changed while this request ran (try again)", body = ErrorBody),
    ))]
pub async fn update_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> Result<JsonResponse<UserResource>, ApiError> {
    update(&state, &actor, &context, &scope, body).await
}

/// Change a person's role or status in an organization the caller can see.
#[utoipa::path(patch, path = "/api/v0/organizations/{organization_id}/users/{user_id}", tag = "users",
    params(("organization_id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    request_body = UpdateUserBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "The person", body = UserResource),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization or person, or not visible", body = ErrorBody),
        (status = 409, description = "It would leave no active owner, or the person changed while this request ran (try again)", body = ErrorBody),
    ))]
pub async fn update_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> Result<JsonResponse<UserResource>, ApiError> {
    update(&state, &actor, &context, &scope, body).await
}

/// Remove a person from the caller's organization.
#[utoipa::path(delete, path = "/api/v0/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Removed", body = Deleted),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such person in the organization", body = ErrorBody),
        (status = 409, description = "The last active owner, or the person changed while this request ran (try again)", body = ErrorBody),
    ))]
pub async fn remove_own(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
) -> Result<JsonResponse<Deleted>, ApiError> {
    remove(&state, &actor, &context, &scope).await
}

/// Remove a person from an organization the caller can see.
#[utoipa::path(delete, path = "/api/v0/organizations/{organization_id}/users/{user_id}", tag = "users",
    params(("organization_id" = String, Path, description = "Organization id"), ("user_id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Removed", body = Deleted),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such organization or person, or not visible", body = ErrorBody),
        (status = 409, description = "The last active owner, or the person changed while this request ran (try again)", body = ErrorBody),
    ))]
pub async fn remove_in(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    scope: Scope,
) -> Result<JsonResponse<Deleted>, ApiError> {
    remove(&state, &actor, &context, &scope).await
}

/// The pending invitations of an organization the caller can see.
#[utoipa::path(get, path = "/api/v0/organizations/{organization_id}/invitations", tag = "users",
    params(
        ("organization_id" = String, Path, description = "Organization id"),
        ("limit" = Option<u32>, Query, description = "1–100, default 100"),
        ("offset" = Option<u64>, Query, description = "default 0"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page: the page after it, in the same order and with the same filters (repeat them); not with offset", example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX"),
        ("order_by" = Option<String>, Query, description = "created_at (default) or email"),
        ("order" = Option<String>, Query, description = "asc (default) or desc"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Pending invitations", body = InvitationList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such organization, or not visible", body = ErrorBody),
    ))]
pub async fn list_invitations(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    Path(organization_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<JsonResponse<InvitationList>, ApiError> {
    let organization = organization(&state, &actor, Some(&organization_id)).await?;
    let paging = query::parse(
        raw.as_deref(),
        &[("created_at", false), ("email", true)],
        |_, _| Ok(false),
    )?;
    let mut listing = InvitationQuery {
        by_email: paging.order_by,
        descending: paging.descending.unwrap_or(false),
        limit: paging.limit,
        offset: paging.offset,
        after: None,
    };
    let cursors = query::Cursors::new(&state, organization.id, &listing);
    listing.after = cursors.open(paging.cursor.as_deref())?;
    let page = people::pending_invitations(&state, &organization, &listing).await?;
    let data: Vec<InvitationResource> = page
        .items
        .into_iter()
        .map(|pending| invitation_resource(pending, &organization.envs))
        .collect();
    Ok(JsonResponse(InvitationList {
        count: page.count,
        data,
        next_cursor: cursors.seal(page.next.as_ref()),
        _type: "INVITATION_LIST",
    }))
}

/// Mail a pending invitation again, with a new link (the old one stops working).
#[utoipa::path(post, path = "/api/v0/invitations/{invitation_id}/resend", tag = "users",
    params(("invitation_id" = String, Path, description = "Invitation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The renewed invitation", body = InvitationResource),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such pending invitation, or not visible", body = ErrorBody),
        (status = 409, description = "The invitation changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn resend_invitation(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(invitation_id): Path<String>,
) -> Result<JsonResponse<InvitationResource>, ApiError> {
    let (invitation, organization) =
        people::find_invitation(&state, &actor, &invitation_id).await?;
    let pending = people::resend(&state, &actor, &context, invitation, &organization).await?;
    Ok(JsonResponse(invitation_resource(
        pending,
        &organization.envs,
    )))
}

/// Revoke a pending invitation.
#[utoipa::path(delete, path = "/api/v0/invitations/{invitation_id}", tag = "users",
    params(("invitation_id" = String, Path, description = "Invitation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked", body = Deleted),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
        (status = 404, description = "No such pending invitation, or not visible", body = ErrorBody),
        (status = 409, description = "The invitation changed while this request ran; try again", body = ErrorBody),
    ))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    Bearer(actor): Bearer,
    context: RequestContext,
    Path(invitation_id): Path<String>,
) -> Result<JsonResponse<Deleted>, ApiError> {
    let (invitation, _) = people::find_invitation(&state, &actor, &invitation_id).await?;
    people::revoke(&state, &actor, &context, invitation).await?;
    Ok(response::deleted())
}

/// Accept an invitation (unauthenticated): sets the password and activates the person, who can
/// then log in with `POST /api/v0/auth` and their email and password.
#[utoipa::path(post, path = "/api/v0/invitations/accept", tag = "users", request_body = AcceptBody,
    responses(
        (status = 200, description = "The now active person", body = UserResource),
        (status = 400, description = "Invalid input, or an invalid, used, revoked or expired token", body = ErrorBody),
        (status = 429, description = "Busy; retry", body = ErrorBody),
    ))]
pub async fn accept(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<AcceptBody>,
) -> Result<JsonResponse<UserResource>, ApiError> {
    if body.token.is_empty() || body.token.len() > crate::http::auth::MAX_CREDENTIAL_LENGTH {
        return Err(UserError::InvalidInvitation.into());
    }
    let (user, membership) = people::accept(
        &state,
        &context,
        &body.token,
        body.password,
        body.first_name,
        body.last_name,
    )
    .await?;
    let envs = state
        .store()
        .organization(membership.organization_id)
        .await?
        .map(|o| o.envs)
        .unwrap_or_default();
    Ok(JsonResponse(user_resource(user, &membership, &envs)))
}
