//! The People screen: the organization's members with role and status, `Invite` (`Email`,
//! `Role`, `Send invitation`), per person `Change role`, `Disable`/`Enable` and `Remove`, and the
//! pending invitations with `Resend` and `Revoke`. Every change goes through
//! [`crate::service::people`], with its policy checks (an admin cannot touch an owner) and audit
//! events; the page leaves out the controls the person's role does not allow.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::policy::{self, Action};
use keyplane_core::records::{InvitationQuery, Membership, Organization, User, UserQuery};
use keyplane_core::values::{Role, UserStatus};
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::layout::{self, Errors, Field, Paging, Section, Sorting, csrf};
use crate::console::session::{Person, Signed};
use crate::service::api_keys;
use crate::service::context::RequestContext;
use crate::service::people::{self, Invite, UserError};
use crate::state::AppState;

/// Members, and pending invitations, per page.
const PAGE_SIZE: u32 = 25;

/// The orders the members table offers (the API's `order_by` names): by email or by when they
/// joined.
const MEMBER_ORDERS: [(&str, bool); 2] = [("email", false), ("created_at", true)];

async fn signed_page(state: &AppState, signed: &Signed, title: &str, body: Markup) -> Markup {
    layout::signed_page(state, signed, Section::People, title, body).await
}

/// A refusal as a page, in the API's words and with its status.
fn refusal(error: UserError) -> Response {
    let (status, message) = match &error {
        UserError::Invalid(error) => (
            StatusCode::BAD_REQUEST,
            format!("{}: {}", error.field, error.message),
        ),
        UserError::NotFound => (StatusCode::NOT_FOUND, "User not found.".into()),
        UserError::InvitationNotFound => (StatusCode::NOT_FOUND, "Invitation not found.".into()),
        UserError::Forbidden => (
            StatusCode::FORBIDDEN,
            "Your role does not allow this.".into(),
        ),
        UserError::AlreadyMember => (
            StatusCode::CONFLICT,
            "email: this person already belongs to the organization".into(),
        ),
        UserError::LastOwner => (
            StatusCode::CONFLICT,
            "The organization's last active owner cannot be removed, demoted or disabled.".into(),
        ),
        UserError::InvalidInvitation => (
            StatusCode::BAD_REQUEST,
            "token: the invitation is invalid, already used, revoked or expired".into(),
        ),
        UserError::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            "Keyplane is busy. Try again in a moment.".into(),
        ),
        UserError::Concurrent => (
            StatusCode::CONFLICT,
            "The person changed while this request ran; try again.".into(),
        ),
        UserError::Store(error) => {
            tracing::warn!(%error, "console people request failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Keyplane cannot reach its database just now. Try again in a moment.".into(),
            )
        }
    };
    layout::refused(status, &message)
}

async fn own_organization(state: &AppState, signed: &Signed) -> Result<Organization, Response> {
    api_keys::organization(state, &signed.actor, None)
        .await
        .map_err(|_| layout::refused(StatusCode::NOT_FOUND, "Organization not found."))
}

#[derive(Debug, Default, Deserialize)]
pub struct PeopleQuery {
    sort: Option<String>,
    order: Option<String>,
    page: Option<String>,
    invitations_page: Option<String>,
    notice: Option<String>,
}

/// Where the People screen stands: the members' order and page, and the invitations' page.
struct Listing {
    sorting: Sorting<bool>,
    members: Paging,
    invitations: Paging,
}

impl Listing {
    fn read(query: &PeopleQuery) -> Self {
        Self {
            sorting: Sorting::read(
                query.sort.as_deref(),
                query.order.as_deref(),
                &MEMBER_ORDERS,
                MEMBER_ORDERS[0],
            ),
            members: Paging::read(query.page.as_deref(), PAGE_SIZE),
            invitations: Paging::read(query.invitations_page.as_deref(), PAGE_SIZE),
        }
    }

    /// This screen's address with some parameters changed.
    fn href(&self, sort: &str, descending: bool, page: u64, invitations_page: u64) -> String {
        let mut url = form_urlencoded::Serializer::new(String::new());
        url.append_pair("sort", sort);
        url.append_pair("order", if descending { "desc" } else { "asc" });
        if page > 1 {
            url.append_pair("page", &page.to_string());
        }
        if invitations_page > 1 {
            url.append_pair("invitations_page", &invitations_page.to_string());
        }
        format!("/console/people?{}", url.finish())
    }
}

fn display_name(user: &User, membership: &Membership) -> String {
    let (first, last) = if membership.status == UserStatus::Invited {
        (
            &membership.invited_first_name,
            &membership.invited_last_name,
        )
    } else {
        (&user.first_name, &user.last_name)
    };
    [first.as_deref(), last.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn list(
    State(state): State<AppState>,
    Person(signed): Person,
    Query(query): Query<PeopleQuery>,
) -> Response {
    let organization = match own_organization(&state, &signed).await {
        Ok(organization) => organization,
        Err(refused) => return refused,
    };
    let listing = Listing::read(&query);
    let (sorting, members_at, invitations_at) =
        (listing.sorting, listing.members, listing.invitations);
    let members = UserQuery {
        by_created_at: sorting.by,
        descending: sorting.descending,
        limit: members_at.size,
        offset: members_at.offset(),
        statuses: vec![UserStatus::Active, UserStatus::Disabled],
        roles: Vec::new(),
        after: None,
    };
    let (members, member_count) = match people::list(&state, &organization, &members).await {
        Ok(page) => (page.items, page.count),
        Err(error) => return refusal(error),
    };
    let invitations = InvitationQuery {
        by_email: true,
        descending: false,
        limit: invitations_at.size,
        offset: invitations_at.offset(),
        after: None,
    };
    let (invitations, invitation_count) =
        match people::pending_invitations(&state, &organization, &invitations).await {
            Ok(page) => (page.items, page.count),
            Err(error) => return refusal(error),
        };
    let may_manage = signed.actor.require(Action::ManageUsers).is_ok();
    let may_touch = |role: Role| {
        may_manage
            && (role != Role::Owner || policy::allows(signed.actor.role, Action::ManageOwners))
    };
    let roles: Vec<Role> = Role::ALL
        .iter()
        .copied()
        .filter(|role| may_touch(*role))
        .collect();
    let notice = match query.notice.as_deref() {
        Some("invited") => Some("The invitation was sent."),
        Some("updated") => Some("The person was changed."),
        Some("removed") => Some("The person was removed from the organization."),
        Some("resent") => Some("The invitation was sent again; the earlier link no longer works."),
        Some("revoked") => Some("The invitation was revoked."),
        _ => None,
    };
    let body = html! {
        div.toolbar {
            h1 { "People" }
            @if may_manage { a.button href="/console/people/invite" { "Invite" } }
        }
        @if let Some(notice) = notice { p.notice.ok role="status" { (notice) } }
        h2 { "Members" }
        // Sorting and paging swap a table in place (htmx); each link is also a plain address.
        div #members {
        div.table-wrap {
            table {
                thead hx-boost="true" hx-target="#members" hx-select="#members" hx-swap="outerHTML" {
                    tr {
                        th scope="col" { "Name" }
                        (sorting.header("email", "Email", |name, descending| listing.href(name, descending, 1, invitations_at.page)))
                        th scope="col" { "Role" }
                        th scope="col" { "Status" }
                        (sorting.header("created_at", "Joined", |name, descending| listing.href(name, descending, 1, invitations_at.page)))
                        @if may_manage { th scope="col" { "Actions" } }
                    }
                }
                tbody {
                    @for (user, membership) in &members {
                        @let id = user.id.to_string();
                        @let email = user.email.as_str();
                        tr {
                            td { (display_name(user, membership)) }
                            td { (email) }
                            td { (layout::role_name(membership.role)) }
                            td class=(format!("status-{}", membership.status.as_str())) { (membership.status.as_str()) }
                            td { (layout::time(membership.created_at)) }
                            @if may_manage {
                                td {
                                    @if may_touch(membership.role) {
                                        div.row-actions {
                                            form method="post" action=(format!("/console/people/{id}/role")) {
                                                (csrf(&signed))
                                                label.skip for=(format!("role-{id}")) { "Role of " (email) }
                                                select id=(format!("role-{id}")) name="role" {
                                                    @for role in &roles {
                                                        option value=(role.as_str()) selected[*role == membership.role] { (role.as_str()) }
                                                    }
                                                }
                                                button.quiet type="submit" aria-label=(format!("Change role of {email}")) { "Change role" }
                                            }
                                            @let (status, toggle) = match membership.status {
                                                UserStatus::Disabled => ("active", "Enable"),
                                                _ => ("disabled", "Disable"),
                                            };
                                            form method="post" action=(format!("/console/people/{id}/status")) {
                                                (csrf(&signed))
                                                input type="hidden" name="status" value=(status);
                                                button.quiet type="submit" aria-label=(format!("{toggle} {email}")) { (toggle) }
                                            }
                                            form method="post" action=(format!("/console/people/{id}/remove")) {
                                                (csrf(&signed))
                                                button.danger type="submit" aria-label=(format!("Remove {email}")) { "Remove" }
                                            }
                                        }
                                    } @else {
                                        span.muted { "owners only" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (members_at.nav(member_count, "members", "members", |page| {
            listing.href(sorting.name, sorting.descending, page, invitations_at.page)
        }))
        }
        h2 { "Pending invitations" }
        div #invitations {
        @if invitations.is_empty() {
            div.empty.card {
                p {
                    "No pending invitations."
                    @if may_manage { " " a href="/console/people/invite" { "Invite" } }
                }
            }
        } @else {
            div.table-wrap {
                table {
                    thead {
                        tr {
                            th scope="col" { "Email" }
                            th scope="col" { "Role" }
                            th scope="col" { "Sent" }
                            th scope="col" { "Expires" }
                            @if may_manage { th scope="col" { "Actions" } }
                        }
                    }
                    tbody {
                        @for pending in &invitations {
                            @let id = pending.invitation.id.to_string();
                            tr {
                                td { (pending.email) }
                                td { (layout::role_name(pending.role)) }
                                td { (layout::time(pending.invitation.created_at)) }
                                td { (layout::time(pending.invitation.expires_at)) }
                                @if may_manage {
                                    td {
                                        @if may_touch(pending.role) {
                                            div.row-actions {
                                                form method="post" action=(format!("/console/invitations/{id}/resend")) {
                                                    (csrf(&signed))
                                                    button.quiet type="submit" aria-label=(format!("Resend to {}", pending.email)) { "Resend" }
                                                }
                                                form method="post" action=(format!("/console/invitations/{id}/revoke")) {
                                                    (csrf(&signed))
                                                    button.danger type="submit" aria-label=(format!("Revoke for {}", pending.email)) { "Revoke" }
                                                }
                                            }
                                        } @else {
                                            span.muted { "owners only" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if invitation_count > 0 {
            (invitations_at.nav(invitation_count, "invitations", "invitations", |page| {
                listing.href(sorting.name, sorting.descending, members_at.page, page)
            }))
        }
        }
    };
    signed_page(&state, &signed, "People", body)
        .await
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct InviteForm {
    email: Option<String>,
    role: Option<String>,
}

fn invite_form(signed: &Signed, form: &InviteForm, errors: &Errors) -> Markup {
    let role = form.role.clone().unwrap_or_else(|| "developer".into());
    let role_error = errors
        .field
        .as_ref()
        .filter(|(f, _)| f == "role")
        .map(|(_, m)| m.clone());
    let offered: Vec<Role> = Role::ALL
        .iter()
        .copied()
        .filter(|r| *r != Role::Owner || policy::allows(signed.actor.role, Action::ManageOwners))
        .collect();
    html! {
        h1 { "Invite" }
        p { "We mail the person a link to set their password and join." }
        (errors.notice(&["email", "role"]))
        form.card method="post" action="/console/people/invite" novalidate {
            (csrf(signed))
            (Field::new("Email", "email", "email", &form.email.clone().unwrap_or_default()).autocomplete("off").render(errors))
            div.field {
                label for="field-role" { "Role" }
                select #field-role name="role" aria-invalid=[role_error.as_ref().map(|_| "true")]
                    aria-describedby=[role_error.as_ref().map(|_| "field-role-error")] {
                    @for option in offered {
                        option value=(option.as_str()) selected[role == option.as_str()] { (option.as_str()) }
                    }
                }
                @if let Some(error) = &role_error { p.error #field-role-error { "Role " (error) } }
            }
            div.actions {
                button type="submit" { "Send invitation" }
                a href="/console/people" { "Cancel" }
            }
        }
    }
}

pub async fn invite_page(State(state): State<AppState>, Person(signed): Person) -> Response {
    if signed.actor.require(Action::ManageUsers).is_err() {
        return refusal(UserError::Forbidden);
    }
    let body = invite_form(&signed, &InviteForm::default(), &Errors::default());
    signed_page(&state, &signed, "Invite", body)
        .await
        .into_response()
}

pub async fn invite(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Form(form): Form<InviteForm>,
) -> Response {
    let organization = match own_organization(&state, &signed).await {
        Ok(organization) => organization,
        Err(refused) => return refused,
    };
    let errors = match form.role.as_deref().unwrap_or_default().parse::<Role>() {
        Err(error) => Errors::from(error),
        Ok(role) => {
            let request = Invite {
                email: form.email.clone().unwrap_or_default(),
                first_name: None,
                last_name: None,
                role,
            };
            match people::invite(&state, &signed.actor, &context, &organization, request).await {
                Ok(_) => return layout::see_other("/console/people?notice=invited"),
                Err(UserError::Invalid(error)) => error.into(),
                Err(UserError::AlreadyMember) => {
                    Errors::field("email", "this person already belongs to the organization")
                }
                Err(other) => return refusal(other),
            }
        }
    };
    let body = invite_form(&signed, &form, &errors);
    (
        StatusCode::BAD_REQUEST,
        signed_page(&state, &signed, "Invite", body).await,
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct ChangeForm {
    role: Option<String>,
    status: Option<String>,
}

async fn member(state: &AppState, signed: &Signed, id: &str) -> Result<Membership, UserError> {
    let organization = api_keys::organization(state, &signed.actor, None)
        .await
        .map_err(|_| UserError::NotFound)?;
    people::find(state, &organization, id).await.map(|(_, m)| m)
}

pub async fn change_role(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let role = match form.role.as_deref().unwrap_or_default().parse::<Role>() {
        Ok(role) => role,
        Err(error) => return refusal(error.into()),
    };
    change(&state, &signed, &context, &id, Some(role), None).await
}

pub async fn change_status(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let status = match form
        .status
        .as_deref()
        .unwrap_or_default()
        .parse::<UserStatus>()
    {
        Ok(status) => status,
        Err(error) => return refusal(error.into()),
    };
    change(&state, &signed, &context, &id, None, Some(status)).await
}

async fn change(
    state: &AppState,
    signed: &Signed,
    context: &RequestContext,
    id: &str,
    role: Option<Role>,
    status: Option<UserStatus>,
) -> Response {
    let current = match member(state, signed, id).await {
        Ok(current) => current,
        Err(error) => return refusal(error),
    };
    match people::update(state, &signed.actor, context, current, role, status).await {
        Ok(_) => layout::see_other("/console/people?notice=updated"),
        Err(error) => refusal(error),
    }
}

pub async fn remove(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
) -> Response {
    let current = match member(&state, &signed, &id).await {
        Ok(current) => current,
        Err(error) => return refusal(error),
    };
    match people::remove(&state, &signed.actor, &context, current).await {
        Ok(()) => layout::see_other("/console/people?notice=removed"),
        Err(error) => refusal(error),
    }
}

/// An invitation of the person's own organization (any other is not found).
async fn own_invitation(
    state: &AppState,
    signed: &Signed,
    id: &str,
) -> Result<(keyplane_core::records::Invitation, Organization), UserError> {
    let (invitation, organization) = people::find_invitation(state, &signed.actor, id).await?;
    if organization.id != signed.actor.organization_id {
        return Err(UserError::InvitationNotFound);
    }
    Ok((invitation, organization))
}

pub async fn resend(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
) -> Response {
    let (invitation, organization) = match own_invitation(&state, &signed, &id).await {
        Ok(found) => found,
        Err(error) => return refusal(error),
    };
    match people::resend(&state, &signed.actor, &context, invitation, &organization).await {
        Ok(_) => layout::see_other("/console/people?notice=resent"),
        Err(error) => refusal(error),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
) -> Response {
    let (invitation, _) = match own_invitation(&state, &signed, &id).await {
        Ok(found) => found,
        Err(error) => return refusal(error),
    };
    match people::revoke(&state, &signed.actor, &context, invitation).await {
        Ok(()) => layout::see_other("/console/people?notice=revoked"),
        Err(error) => refusal(error),
    }
}
