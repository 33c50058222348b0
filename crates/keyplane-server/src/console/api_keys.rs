//! The API keys screen: the organization's keys with filters, sorting and paging; a new key,
//! whose secret is shown once on the answer to its POST (never in a URL or a redirect);
//! enabling and disabling, rotating (the new secret shown once) and deleting (confirmed by
//! typing the key's name). Every change goes through [`crate::service::api_keys`], whose
//! policy check refuses a viewer's forged POST as it refuses the API call; the page merely
//! leaves out the controls a person's role does not allow.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::api_keys::{ApiKeyOrder, ApiKeyQuery};
use keyplane_core::policy::{self, Action};
use keyplane_core::records::{ApiKey, Organization};
use keyplane_core::secrets::PlainCredential;
use keyplane_core::values::{ApiKeyKind, ApiKeyStatus, Role};
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::layout::{self, Errors, Field, Paging, Section, Sorting, csrf};
use crate::console::session::{Person, Signed, safe_next};
use crate::service::api_keys::{self, ApiKeyError, CreateRequest, KeyRef, UpdateRequest};
use crate::service::context::RequestContext;
use crate::state::AppState;

/// Keys per page.
const PAGE_SIZE: u32 = 25;

/// Renders a signed-in page with the header (navigation, switcher, sign out).
async fn signed_page(state: &AppState, signed: &Signed, title: &str, body: Markup) -> Markup {
    layout::signed_page(state, signed, Section::ApiKeys, title, body).await
}

/// What a refused change says, in the API's words.
fn message(error: &ApiKeyError) -> String {
    match error {
        ApiKeyError::Invalid(error) => format!("{}: {}", error.field, error.message),
        ApiKeyError::OrganizationNotFound => "Organization not found.".into(),
        ApiKeyError::NotFound => "API key not found.".into(),
        ApiKeyError::Forbidden => "Your role does not allow managing API keys.".into(),
        ApiKeyError::AboveCallerRole => "role: a key's role cannot be above your own, and keys above your role cannot be changed, rotated or deleted by you.".into(),
        ApiKeyError::EnvNotEnabled => "kind: live keys need the organization's LIVE env (enable-env).".into(),
        ApiKeyError::NameTaken => "name: an API key with this name exists in the organization".into(),
        ApiKeyError::Concurrent => "The API key changed while this request ran; try again.".into(),
        ApiKeyError::Store(_) => "Keyplane cannot reach its database just now. Try again in a moment.".into(),
    }
}

/// A refusal as a page with its status, as the API would answer it.
fn refusal(error: ApiKeyError) -> Response {
    let status = match &error {
        ApiKeyError::Invalid(_) => StatusCode::BAD_REQUEST,
        ApiKeyError::OrganizationNotFound | ApiKeyError::NotFound => StatusCode::NOT_FOUND,
        ApiKeyError::Forbidden | ApiKeyError::AboveCallerRole | ApiKeyError::EnvNotEnabled => {
            StatusCode::FORBIDDEN
        }
        ApiKeyError::NameTaken | ApiKeyError::Concurrent => StatusCode::CONFLICT,
        ApiKeyError::Store(error) => {
            tracing::warn!(%error, "console API key request failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    layout::refused(status, &message(&error))
}

/// The errors of a form, beside the field the API names.
fn form_errors(error: ApiKeyError) -> Result<Errors, ApiKeyError> {
    match error {
        ApiKeyError::Invalid(error) => Ok(error.into()),
        ApiKeyError::NameTaken => Ok(Errors::field(
            "name",
            "an API key with this name exists in the organization",
        )),
        ApiKeyError::EnvNotEnabled => Ok(Errors::field(
            "kind",
            "live keys need the organization's LIVE env (enable-env).",
        )),
        ApiKeyError::AboveCallerRole => {
            Ok(Errors::field("role", "must not be above your own role"))
        }
        other => Err(other),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    kind: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    page: Option<String>,
    notice: Option<String>,
}

/// The list's state, read leniently: a value the page did not offer is ignored.
struct Listing {
    kind: Option<ApiKeyKind>,
    status: Option<ApiKeyStatus>,
    sorting: Sorting<ApiKeyOrder>,
    paging: Paging,
}

impl Listing {
    fn read(query: &ListQuery) -> Self {
        Self {
            kind: query.kind.as_deref().and_then(|k| k.parse().ok()),
            status: query.status.as_deref().and_then(|s| s.parse().ok()),
            sorting: Sorting::read(
                query.sort.as_deref(),
                query.order.as_deref(),
                &ApiKeyOrder::ALL,
                ("created_at", ApiKeyOrder::CreatedAt),
            ),
            paging: Paging::read(query.page.as_deref(), PAGE_SIZE),
        }
    }

    fn query(&self) -> ApiKeyQuery {
        ApiKeyQuery {
            order_by: self.sorting.by,
            descending: self.sorting.descending,
            limit: self.paging.size,
            offset: self.paging.offset(),
            kinds: self.kind.into_iter().collect(),
            statuses: self.status.into_iter().collect(),
            after: None,
        }
    }

    /// This listing's address with some parameters changed.
    fn href(&self, sort: &str, descending: bool, page: u64) -> String {
        let mut url = form_urlencoded::Serializer::new(String::new());
        if let Some(kind) = self.kind {
            url.append_pair("kind", kind.as_str());
        }
        if let Some(status) = self.status {
            url.append_pair("status", status.as_str());
        }
        url.append_pair("sort", sort);
        url.append_pair("order", if descending { "desc" } else { "asc" });
        if page > 1 {
            url.append_pair("page", &page.to_string());
        }
        format!("/console/api-keys?{}", url.finish())
    }
}

pub async fn list(
    State(state): State<AppState>,
    Person(signed): Person,
    Query(query): Query<ListQuery>,
) -> Response {
    let organization = match api_keys::organization(&state, &signed.actor, None).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let listing = Listing::read(&query);
    let (keys, count) = match api_keys::list(&state, &organization, &listing.query()).await {
        Ok(page) => (page.items, page.count),
        Err(error) => return refusal(error),
    };
    let may_manage = signed.actor.require(Action::ManageApiKeys).is_ok();
    let sorting = listing.sorting;
    let here = listing.href(sorting.name, sorting.descending, listing.paging.page);
    let notice = match query.notice.as_deref() {
        Some("enabled") => Some("The API key was enabled."),
        Some("disabled") => Some("The API key was disabled."),
        Some("deleted") => Some("The API key was deleted."),
        Some("updated") => Some("The API key was saved."),
        _ => None,
    };
    let filtered = listing.kind.is_some() || listing.status.is_some();
    let sort_link = |name: &str, label: &str| {
        sorting.header(name, label, |name, descending| {
            listing.href(name, descending, 1)
        })
    };
    let body = html! {
        div.toolbar {
            h1 { "API keys" }
            @if may_manage {
                a.button href="/console/api-keys/new" { "New API key" }
            }
        }
        @if let Some(notice) = notice {
            p.notice.ok role="status" { (notice) }
        }
        form.filters method="get" action="/console/api-keys"
            hx-get="/console/api-keys" hx-trigger="change" hx-target="#keys" hx-select="#keys" hx-swap="outerHTML" hx-push-url="true" {
            div.field {
                label for="filter-kind" { "Kind" }
                select #filter-kind name="kind" {
                    option value="" { "All kinds" }
                    @for kind in ApiKeyKind::ALL {
                        option value=(kind.as_str()) selected[listing.kind == Some(*kind)] { (kind.as_str()) }
                    }
                }
            }
            div.field {
                label for="filter-status" { "Status" }
                select #filter-status name="status" {
                    option value="" { "All statuses" }
                    @for status in ApiKeyStatus::ALL {
                        option value=(status.as_str()) selected[listing.status == Some(*status)] { (status.as_str()) }
                    }
                }
            }
            input type="hidden" name="sort" value=(sorting.name);
            input type="hidden" name="order" value=(sorting.order());
            button.quiet type="submit" { "Apply" }
        }
        // Sorting and paging swap the table in place (htmx); every other link and form is a
        // plain page load, so the whole page (and its notices) is always what the server sent.
        div #keys {
            @if keys.is_empty() {
                div.empty.card {
                    @if filtered {
                        p { "No API keys match these filters." }
                        p { a href="/console/api-keys" { "Show all API keys" } }
                    } @else if may_manage {
                        p { "No API keys yet — " a href="/console/api-keys/new" { "New API key" } }
                    } @else {
                        p { "No API keys yet." }
                    }
                }
            } @else {
                div.table-wrap {
                    table {
                        caption.skip { "API keys of " (organization.name) }
                        thead hx-boost="true" hx-target="#keys" hx-select="#keys" hx-swap="outerHTML" {
                            tr {
                                (sort_link("name", "Name"))
                                (sort_link("kind", "Kind"))
                                th scope="col" { "Role" }
                                (sort_link("status", "Status"))
                                (sort_link("created_at", "Created"))
                                th scope="col" { "Last used" }
                                th scope="col" { "Expires" }
                                @if may_manage { th scope="col" { "Actions" } }
                            }
                        }
                        tbody {
                            @for key in &keys {
                                (row(&signed, key, may_manage, &here))
                            }
                        }
                    }
                }
                (listing.paging.nav(count, "keys", "keys", |page| {
                    listing.href(sorting.name, sorting.descending, page)
                }))
            }
        }
    };
    signed_page(&state, &signed, "API keys", body)
        .await
        .into_response()
}

fn row(signed: &Signed, key: &ApiKey, may_manage: bool, back: &str) -> Markup {
    let id = key.id.to_string();
    let may_touch = may_manage && policy::may_touch_key(signed.actor.role, key.role);
    let (next_status, toggle) = match key.status {
        ApiKeyStatus::Enabled => ("disabled", "Disable"),
        ApiKeyStatus::Disabled => ("enabled", "Enable"),
    };
    html! {
        tr {
            td { (key.name.as_str()) br; span.muted { code { (key.public_key) } } }
            td { (key.kind.as_str()) }
            td { (layout::role_name(key.role)) }
            td class=(format!("status-{}", key.status.as_str())) { (key.status.as_str()) }
            td { (layout::time(key.created_at)) }
            td { (key.last_used_at.map(layout::time).unwrap_or_else(|| "never".into())) }
            td { (key.expires_at.map(layout::time).unwrap_or_else(|| "never".into())) }
            @if may_manage {
                td {
                    @if may_touch {
                        div.row-actions {
                            form method="post" action=(format!("/console/api-keys/{id}/status")) {
                                (csrf(signed))
                                input type="hidden" name="status" value=(next_status);
                                input type="hidden" name="back" value=(back);
                                button.quiet type="submit" aria-label=(format!("{toggle} {}", key.name.as_str())) { (toggle) }
                            }
                            a.button.quiet href=(format!("/console/api-keys/{id}/edit")) aria-label=(format!("Edit {}", key.name.as_str())) { "Edit" }
                            a.button.quiet href=(format!("/console/api-keys/{id}/rotate")) aria-label=(format!("Rotate {}", key.name.as_str())) { "Rotate" }
                            a.button.danger href=(format!("/console/api-keys/{id}/delete")) aria-label=(format!("Delete {}", key.name.as_str())) { "Delete" }
                        }
                    } @else {
                        span.muted { "role above yours" }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NewKeyForm {
    name: Option<String>,
    kind: Option<String>,
    role: Option<String>,
    metadata: Option<String>,
    expires_at: Option<String>,
}

fn new_key_form(
    signed: &Signed,
    organization: &Organization,
    form: &NewKeyForm,
    errors: &Errors,
) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let kind = form.kind.clone().unwrap_or_else(|| "test".into());
    let kind_error = errors
        .field
        .as_ref()
        .filter(|(f, _)| f == "kind")
        .map(|(_, m)| m.clone());
    html! {
        h1 { "New API key" }
        (errors.notice(&["name", "kind", "role", "metadata", "expires_at"]))
        form.card method="post" action="/console/api-keys" novalidate {
            (csrf(signed))
            (Field::new("Name", "name", "text", &value(&form.name)).hint("3 to 30 characters: letters, digits, - and _").render(errors))
            div.field {
                label for="field-kind" { "Kind" }
                select #field-kind name="kind" aria-invalid=[kind_error.as_ref().map(|_| "true")]
                    aria-describedby=[kind_error.as_ref().map(|_| "field-kind-error")] {
                    @for option in ApiKeyKind::ALL {
                        @let disabled = !organization.may_hold(*option);
                        option value=(option.as_str()) selected[kind == option.as_str()] disabled[disabled] {
                            (option.as_str())
                            @if disabled { " (needs the LIVE env)" }
                        }
                    }
                }
                @if let Some(error) = &kind_error {
                    p.error #field-kind-error { "Kind " (error) }
                }
            }
            (role_field(signed, form.role.as_deref(), errors))
            (Field::new("Metadata", "metadata", "textarea", &value(&form.metadata)).optional().hint(r#"Optional. A JSON object of strings, e.g. {"store": "berlin-01"}"#).render(errors))
            (Field::new("Expires", "expires_at", "datetime-local", &value(&form.expires_at)).optional().hint("Optional, in UTC. Without it the key does not expire.").render(errors))
            div.actions {
                button type="submit" { "Create" }
                a href="/console/api-keys" { "Cancel" }
            }
        }
    }
}

pub async fn new_page(State(state): State<AppState>, Person(signed): Person) -> Response {
    if let Err(error) = signed.actor.require(Action::ManageApiKeys) {
        return refusal(error.into());
    }
    let organization = match api_keys::organization(&state, &signed.actor, None).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let body = new_key_form(
        &signed,
        &organization,
        &NewKeyForm::default(),
        &Errors::default(),
    );
    signed_page(&state, &signed, "New API key", body)
        .await
        .into_response()
}

/// The `Role` select: the roles [`policy::key_role`] lets this person give (the rule the use
/// case applies again), the key's or the default one chosen.
fn role_field(signed: &Signed, chosen: Option<&str>, errors: &Errors) -> Markup {
    let caller = signed.actor.role;
    let default = policy::key_role(caller, None).unwrap_or(Role::Viewer);
    let chosen = chosen.filter(|c| !c.is_empty()).unwrap_or(default.as_str());
    let error = errors
        .field
        .as_ref()
        .filter(|(f, _)| f == "role")
        .map(|(_, m)| m.clone());
    html! {
        div.field {
            label for="field-role" { "Role" }
            select #field-role name="role" aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| "field-role-error")] {
                @for option in Role::ALL {
                    @if policy::key_role(caller, Some(*option)).is_ok() {
                        option value=(option.as_str()) selected[chosen == option.as_str()] { (option.as_str()) }
                    }
                }
            }
            p.hint { "What the key may do; no higher than your own role." }
            @if let Some(error) = &error {
                p.error #field-role-error { "Role " (error) }
            }
        }
    }
}

/// The role a form asks for: none (the API's default) when empty.
fn requested_role(role: Option<&str>) -> Result<Option<Role>, Errors> {
    match role.filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(text) => Ok(Some(text.parse::<Role>()?)),
    }
}

/// Reads the form's fields into the use case's request, with the API's messages.
fn create_request(form: &NewKeyForm) -> Result<CreateRequest, Errors> {
    let kind = form
        .kind
        .as_deref()
        .unwrap_or_default()
        .parse::<ApiKeyKind>()?;
    let metadata = layout::parse_metadata(form.metadata.as_deref())?;
    let expires_at = match form.expires_at.as_deref().filter(|e| !e.is_empty()) {
        None => None,
        Some(text) => Some(layout::parse_datetime(text).ok_or_else(|| {
            Errors::field("expires_at", "must be a date and time (YYYY-MM-DDTHH:MM)")
        })?),
    };
    Ok(CreateRequest {
        name: form.name.clone().unwrap_or_default(),
        kind,
        status: ApiKeyStatus::Enabled,
        role: requested_role(form.role.as_deref())?,
        metadata,
        expires_at,
    })
}

/// The secret, once: on the answer to the POST that made it, never stored or put in a URL.
fn secret_page(key: &ApiKey, secret: &PlainCredential, heading: &str) -> Markup {
    html! {
        h1 { (heading) }
        p.notice.warn role="alert" {
            strong { "Copy the secret now. " }
            "It will not be shown again: Keyplane keeps only a keyed hash of it."
        }
        div.card {
            dl.facts {
                dt { "Name" } dd { (key.name.as_str()) }
                dt { "Kind" } dd { (key.kind.as_str()) }
                dt { "Role" } dd { (layout::role_name(key.role)) }
                dt { "API key" } dd { code #api-key { (key.public_key) } }
            }
            div.field {
                span #secret-label { strong { "Secret" } }
                div.secret {
                    output #secret aria-labelledby="secret-label" { (secret.expose()) }
                    button.quiet type="button" data-copy="secret" { "Copy" }
                }
            }
            div.actions { a.button href="/console/api-keys" { "Done" } }
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Form(form): Form<NewKeyForm>,
) -> Response {
    let organization = match api_keys::organization(&state, &signed.actor, None).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let outcome = match create_request(&form) {
        Ok(request) => api_keys::create(&state, &signed.actor, &context, &organization, request)
            .await
            .map_err(form_errors),
        Err(errors) => Err(Ok(errors)),
    };
    match outcome {
        Ok((key, secret)) => {
            let body = secret_page(&key, &secret, "API key created");
            signed_page(&state, &signed, "API key created", body)
                .await
                .into_response()
        }
        Err(Ok(errors)) => {
            let body = new_key_form(&signed, &organization, &form, &errors);
            (
                StatusCode::BAD_REQUEST,
                signed_page(&state, &signed, "New API key", body).await,
            )
                .into_response()
        }
        Err(Err(error)) => refusal(error),
    }
}

/// The key a path names, in the signed-in person's organization (404 for any other).
async fn located(state: &AppState, signed: &Signed, id: &str) -> Result<ApiKey, ApiKeyError> {
    let organization = api_keys::organization(state, &signed.actor, None).await?;
    api_keys::find(state, &organization, KeyRef::Id(id)).await
}

#[derive(Debug, Default, Deserialize)]
pub struct StatusForm {
    status: Option<String>,
    back: Option<String>,
}

pub async fn set_status(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<StatusForm>,
) -> Response {
    let status = match form
        .status
        .as_deref()
        .unwrap_or_default()
        .parse::<ApiKeyStatus>()
    {
        Ok(status) => status,
        Err(error) => return refusal(error.into()),
    };
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let request = UpdateRequest {
        status: Some(status),
        role: None,
        metadata: None,
        expires_at: None,
    };
    match api_keys::update(&state, &signed.actor, &context, key, request).await {
        Ok(_) => {
            let back = safe_next(form.back.as_deref());
            let separator = if back.contains('?') { '&' } else { '?' };
            layout::see_other(&format!("{back}{separator}notice={}", status.as_str()))
        }
        Err(error) => refusal(error),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EditForm {
    role: Option<String>,
    metadata: Option<String>,
    expires_at: Option<String>,
}

fn edit_form(signed: &Signed, key: &ApiKey, form: &EditForm, errors: &Errors) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        h1 { "Edit " (key.name.as_str()) }
        (errors.notice(&["role", "metadata", "expires_at"]))
        form.card method="post" action=(format!("/console/api-keys/{}/edit", key.id)) novalidate {
            (csrf(signed))
            (role_field(signed, form.role.as_deref(), errors))
            (Field::new("Metadata", "metadata", "textarea", &value(&form.metadata)).optional().hint(r#"A JSON object of strings, e.g. {"store": "berlin-01"}; empty for none."#).render(errors))
            (Field::new("Expires", "expires_at", "datetime-local", &value(&form.expires_at)).optional().hint("In UTC. Empty: the key does not expire.").render(errors))
            div.actions {
                button type="submit" { "Save" }
                a href="/console/api-keys" { "Cancel" }
            }
        }
    }
}

pub async fn edit_page(
    State(state): State<AppState>,
    Person(signed): Person,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = signed.actor.require(Action::ManageApiKeys) {
        return refusal(error.into());
    }
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let form = EditForm {
        role: Some(key.role.as_str().to_owned()),
        metadata: (!key.metadata.is_empty())
            .then(|| serde_json::to_string_pretty(&key.metadata).unwrap_or_default()),
        expires_at: key.expires_at.map(layout::datetime_input),
    };
    let body = edit_form(&signed, &key, &form, &Errors::default());
    signed_page(&state, &signed, "Edit API key", body)
        .await
        .into_response()
}

/// The metadata and expiry a form asks for: empty clears them.
fn edit_request(form: &EditForm) -> Result<UpdateRequest, Errors> {
    let metadata = layout::parse_metadata(form.metadata.as_deref())?.unwrap_or_default();
    let expires_at = match form.expires_at.as_deref().filter(|e| !e.is_empty()) {
        None => None,
        Some(text) => Some(layout::parse_datetime(text).ok_or_else(|| {
            Errors::field("expires_at", "must be a date and time (YYYY-MM-DDTHH:MM)")
        })?),
    };
    Ok(UpdateRequest {
        status: None,
        role: requested_role(form.role.as_deref())?,
        metadata: Some(metadata),
        expires_at: Some(expires_at),
    })
}

pub async fn edit(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> Response {
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let outcome = match edit_request(&form) {
        Ok(request) => api_keys::update(&state, &signed.actor, &context, key.clone(), request)
            .await
            .map_err(form_errors),
        Err(errors) => Err(Ok(errors)),
    };
    match outcome {
        Ok(_) => layout::see_other("/console/api-keys?notice=updated"),
        Err(Ok(errors)) => {
            let body = edit_form(&signed, &key, &form, &errors);
            (
                StatusCode::BAD_REQUEST,
                signed_page(&state, &signed, "Edit API key", body).await,
            )
                .into_response()
        }
        Err(Err(error)) => refusal(error),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RotateForm {
    grace_period_seconds: Option<String>,
    /// The secret generation the form was shown for: a reload of the answer does not rotate
    /// again.
    generation: Option<String>,
}

fn rotate_form(signed: &Signed, key: &ApiKey, grace: &str, errors: &Errors) -> Markup {
    html! {
        h1 { "Rotate " (key.name.as_str()) }
        p { "A new secret replaces the current one. During the grace period the old secret keeps working, so clients can move over." }
        (errors.notice(&["grace_period_seconds"]))
        form.card method="post" action=(format!("/console/api-keys/{}/rotate", key.id)) novalidate {
            (csrf(signed))
            input type="hidden" name="generation" value=(key.secret_generation);
            (Field::new("Grace period", "grace_period_seconds", "number", grace).hint("Seconds the old secret keeps working: 0 ends it now, at most 2592000 (30 days).").render(errors))
            div.actions {
                button type="submit" { "Rotate" }
                a href="/console/api-keys" { "Cancel" }
            }
        }
    }
}

pub async fn rotate_page(
    State(state): State<AppState>,
    Person(signed): Person,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = signed.actor.require(Action::ManageApiKeys) {
        return refusal(error.into());
    }
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let body = rotate_form(&signed, &key, "0", &Errors::default());
    signed_page(&state, &signed, "Rotate API key", body)
        .await
        .into_response()
}

pub async fn rotate(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let grace_text = form.grace_period_seconds.clone().unwrap_or_default();
    let Ok(grace) = grace_text.trim().parse::<i64>() else {
        let errors = Errors::field("grace_period_seconds", "must be a whole number of seconds");
        let body = rotate_form(&signed, &key, &grace_text, &errors);
        return (
            StatusCode::BAD_REQUEST,
            signed_page(&state, &signed, "Rotate API key", body).await,
        )
            .into_response();
    };
    // The form was for one secret: a reload of the answer page, or a second submit racing the
    // first, finds it rotated away and rotates nothing.
    let shown_for = form
        .generation
        .as_deref()
        .and_then(|g| g.parse::<i64>().ok());
    if shown_for != Some(key.secret_generation) {
        return layout::see_other("/console/api-keys");
    }
    match api_keys::rotate(
        &state,
        &signed.actor,
        &context,
        key.clone(),
        grace,
        shown_for,
    )
    .await
    {
        Ok((key, secret)) => {
            let body = secret_page(&key, &secret, "API key rotated");
            signed_page(&state, &signed, "API key rotated", body)
                .await
                .into_response()
        }
        // Another submit of this form rotated it first.
        Err(ApiKeyError::Concurrent) => layout::see_other("/console/api-keys"),
        Err(ApiKeyError::Invalid(error)) => {
            let body = rotate_form(&signed, &key, &grace_text, &error.into());
            (
                StatusCode::BAD_REQUEST,
                signed_page(&state, &signed, "Rotate API key", body).await,
            )
                .into_response()
        }
        Err(error) => refusal(error),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    confirm_name: Option<String>,
}

fn delete_form(signed: &Signed, key: &ApiKey, typed: &str, errors: &Errors) -> Markup {
    html! {
        h1 { "Delete " (key.name.as_str()) }
        p { "Deleting the key ends every token it obtained. This cannot be undone." }
        form.card method="post" action=(format!("/console/api-keys/{}/delete", key.id)) novalidate {
            (csrf(signed))
            (Field::new("Type the key's name to confirm", "confirm_name", "text", typed).hint(key.name.as_str()).render(errors))
            div.actions {
                button.danger type="submit" { "Delete" }
                a href="/console/api-keys" { "Cancel" }
            }
        }
    }
}

pub async fn delete_page(
    State(state): State<AppState>,
    Person(signed): Person,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = signed.actor.require(Action::ManageApiKeys) {
        return refusal(error.into());
    }
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let body = delete_form(&signed, &key, "", &Errors::default());
    signed_page(&state, &signed, "Delete API key", body)
        .await
        .into_response()
}

pub async fn delete(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let key = match located(&state, &signed, &id).await {
        Ok(key) => key,
        Err(error) => return refusal(error),
    };
    let typed = form.confirm_name.unwrap_or_default();
    if typed != key.name.as_str() {
        let errors = Errors::field("confirm_name", "must be the key's name");
        let body = delete_form(&signed, &key, &typed, &errors);
        return (
            StatusCode::BAD_REQUEST,
            signed_page(&state, &signed, "Delete API key", body).await,
        )
            .into_response();
    }
    match api_keys::delete(&state, &signed.actor, &context, key).await {
        Ok(()) => layout::see_other("/console/api-keys?notice=deleted"),
        Err(error) => refusal(error),
    }
}
