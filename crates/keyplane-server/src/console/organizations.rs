//! The Organizations screen: the person's organization and those it manages, as a tree; `New
//! organization` (the fields of contract §5 a person types: name, address, tax ids), edit,
//! `Enable LIVE`, and delete (confirmed by typing the name; an organization that still manages
//! others is refused with a sentence). Through [`crate::service::organizations`], with its policy
//! check, visibility rule (only the caller's own tree) and audit events.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::organizations::{OrganizationFields, OrganizationOrder, OrganizationQuery};
use keyplane_core::policy::Action;
use keyplane_core::records::Organization;
use keyplane_core::values::Env;
use keyplane_core::{OrganizationId, ValidationError};
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::layout::{self, Errors, Field, Paging, Section, Sorting, csrf};
use crate::console::session::{Person, Signed};
use crate::service::context::RequestContext;
use crate::service::organizations::{self, OrganizationError};
use crate::state::AppState;

/// Organizations per page of the tree.
const PAGE_SIZE: u32 = 50;

/// Organizations offered as the manager of a new one (the first, by name).
const SHOWN: u32 = 100;

async fn signed_page(state: &AppState, signed: &Signed, title: &str, body: Markup) -> Markup {
    layout::signed_page(state, signed, Section::Organizations, title, body).await
}

/// The API's words for a refusal, and its status.
fn refusal(error: OrganizationError) -> Response {
    let (status, message) = match &error {
        OrganizationError::Invalid(error) => (
            StatusCode::BAD_REQUEST,
            format!("{}: {}", error.field, error.message),
        ),
        OrganizationError::NotFound => (StatusCode::NOT_FOUND, "Organization not found.".into()),
        OrganizationError::Forbidden => (
            StatusCode::FORBIDDEN,
            "Your role does not allow managing organizations.".into(),
        ),
        OrganizationError::DeleteOwn => (
            StatusCode::FORBIDDEN,
            "An organization cannot delete itself.".into(),
        ),
        OrganizationError::ManagesOthers => (
            StatusCode::CONFLICT,
            "The organization still manages organizations; delete those first.".into(),
        ),
        OrganizationError::LiveNeedsManager => (
            StatusCode::FORBIDDEN,
            "A managed organization's LIVE env is enabled by the organization that manages it, when that one has LIVE itself.".into(),
        ),
        OrganizationError::Concurrent => (
            StatusCode::CONFLICT,
            "The organization changed while this request ran; try again.".into(),
        ),
        OrganizationError::Store(error) => {
            tracing::warn!(%error, "console organization request failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Keyplane cannot reach its database just now. Try again in a moment.".into(),
            )
        }
    };
    layout::refused(status, &message)
}

#[derive(Debug, Default, Deserialize)]
pub struct TreeQuery {
    sort: Option<String>,
    order: Option<String>,
    page: Option<String>,
    notice: Option<String>,
}

/// The tree's address for an order and a page.
fn tree_href(sorting: &Sorting<OrganizationOrder>, page: u64) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    url.append_pair("sort", sorting.name);
    url.append_pair("order", sorting.order());
    if page > 1 {
        url.append_pair("page", &page.to_string());
    }
    format!("/console/organizations?{}", url.finish())
}

pub async fn tree(
    State(state): State<AppState>,
    Person(signed): Person,
    Query(query): Query<TreeQuery>,
) -> Response {
    let sorting = Sorting::read(
        query.sort.as_deref(),
        query.order.as_deref(),
        &OrganizationOrder::ALL,
        OrganizationOrder::ALL[0],
    );
    let paging = Paging::read(query.page.as_deref(), PAGE_SIZE);
    let listing = OrganizationQuery {
        order_by: sorting.by,
        descending: sorting.descending,
        limit: paging.size,
        offset: paging.offset(),
        managed_by: None,
        managed: None,
        env: None,
        after: None,
    };
    let (found, count) = match organizations::list(&state, &signed.actor, &listing).await {
        Ok(page) => (page.items, page.count),
        Err(error) => return refusal(error),
    };
    let may_manage = signed.actor.require(Action::ManageOrganizations).is_ok();
    let own = signed.actor.organization_id;
    let mut children: HashMap<OrganizationId, Vec<&Organization>> = HashMap::new();
    for organization in &found {
        if let Some(manager) = organization.managed_by {
            children.entry(manager).or_default().push(organization);
        }
    }
    // On this page, the tree's tops: the caller's own organization, and those whose manager is
    // on another page.
    let on_page: std::collections::HashSet<OrganizationId> = found.iter().map(|o| o.id).collect();
    let roots: Vec<&Organization> = found
        .iter()
        .filter(|o| o.id == own || !o.managed_by.is_some_and(|m| on_page.contains(&m)))
        .collect();
    let notice = match query.notice.as_deref() {
        Some("created") => Some("The organization was created."),
        Some("updated") => Some("The organization was saved."),
        Some("live") => Some("The LIVE env was enabled."),
        Some("deleted") => Some("The organization was deleted."),
        _ => None,
    };
    let body = html! {
        div.toolbar {
            h1 { "Organizations" }
            @if may_manage { a.button href="/console/organizations/new" { "New organization" } }
        }
        @if let Some(notice) = notice { p.notice.ok role="status" { (notice) } }
        form.filters method="get" action="/console/organizations"
            hx-get="/console/organizations" hx-trigger="change" hx-target="#organizations" hx-select="#organizations" hx-swap="outerHTML" hx-push-url="true" {
            div.field {
                label for="sort-by" { "Sort by" }
                select #sort-by name="sort" {
                    @for (name, _) in OrganizationOrder::ALL {
                        option value=(name) selected[sorting.name == name] { (name.replace('_', " ")) }
                    }
                }
            }
            div.field {
                label for="sort-order" { "Order" }
                select #sort-order name="order" {
                    option value="asc" selected[!sorting.descending] { "ascending" }
                    option value="desc" selected[sorting.descending] { "descending" }
                }
            }
            button.quiet type="submit" { "Apply" }
        }
        div #organizations {
            ul.tree {
                @for root in &roots { (node(&signed, root, &children, may_manage, 0)) }
            }
            (paging.nav(count, "organizations", "organizations", |page| tree_href(&sorting, page)))
        }
        @if children.is_empty() && may_manage {
            p.muted { "Your organization manages no other yet — " a href="/console/organizations/new" { "New organization" } }
        }
    };
    signed_page(&state, &signed, "Organizations", body)
        .await
        .into_response()
}

fn node(
    signed: &Signed,
    organization: &Organization,
    children: &HashMap<OrganizationId, Vec<&Organization>>,
    may_manage: bool,
    depth: usize,
) -> Markup {
    let id = organization.id.to_string();
    let name = organization.name.as_str();
    let envs: Vec<&str> = organization.envs.iter().map(Env::as_str).collect();
    let own = organization.id == signed.actor.organization_id;
    html! {
        li {
            div.card.org {
                strong { (name) }
                @if own { " " span.muted { "(yours)" } }
                br;
                span.muted {
                    (organization.address_line1.clone().unwrap_or_default()) " "
                    (organization.zip.clone().unwrap_or_default()) " "
                    (organization.town.clone().unwrap_or_default()) " "
                    (organization.country_code.clone().unwrap_or_default())
                    " · envs " (envs.join(", "))
                }
                @if may_manage {
                    div.row-actions {
                        a.button.quiet href=(format!("/console/organizations/{id}/edit")) aria-label=(format!("Edit {name}")) { "Edit" }
                        @if !organization.envs.contains(&Env::Live) {
                            form method="post" action=(format!("/console/organizations/{id}/live")) {
                                (csrf(signed))
                                button.quiet type="submit" aria-label=(format!("Enable LIVE for {name}")) { "Enable LIVE" }
                            }
                        }
                        @if !own {
                            a.button.danger href=(format!("/console/organizations/{id}/delete")) aria-label=(format!("Delete {name}")) { "Delete" }
                        }
                    }
                }
            }
            @if let Some(managed) = children.get(&organization.id).filter(|_| depth < 64) {
                ul.tree {
                    @for child in managed { (node(signed, child, children, may_manage, depth + 1)) }
                }
            }
        }
    }
}

/// The form's fields, as typed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OrganizationForm {
    name: Option<String>,
    display_name: Option<String>,
    address_line1: Option<String>,
    address_line2: Option<String>,
    zip: Option<String>,
    town: Option<String>,
    state: Option<String>,
    country_code: Option<String>,
    vat_id: Option<String>,
    tax_number: Option<String>,
    economy_id: Option<String>,
    contact_person_id: Option<String>,
    billing_address_id: Option<String>,
    metadata: Option<String>,
    managed_by: Option<String>,
}

const FIELDS: [&str; 15] = [
    "name",
    "display_name",
    "address_line1",
    "address_line2",
    "zip",
    "town",
    "state",
    "country_code",
    "vat_id",
    "tax_number",
    "economy_id",
    "contact_person_id",
    "billing_address_id",
    "metadata",
    "managed_by_organization_id",
];

impl OrganizationForm {
    fn of(organization: &Organization) -> Self {
        Self {
            name: Some(organization.name.clone()),
            display_name: organization.display_name.clone(),
            address_line1: organization.address_line1.clone(),
            address_line2: organization.address_line2.clone(),
            zip: organization.zip.clone(),
            town: organization.town.clone(),
            state: organization.state.clone(),
            country_code: organization.country_code.clone(),
            vat_id: organization.vat_id.clone(),
            tax_number: organization.tax_number.clone(),
            economy_id: organization.economy_id.clone(),
            contact_person_id: organization.contact_person_id.clone(),
            billing_address_id: organization.billing_address_id.clone(),
            metadata: (!organization.metadata.is_empty())
                .then(|| serde_json::to_string_pretty(&organization.metadata).unwrap_or_default()),
            managed_by: None,
        }
    }

    /// Empty required fields are absent (so "is required"); empty optional ones are cleared.
    fn fields(&self) -> Result<OrganizationFields, ValidationError> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        Ok(OrganizationFields {
            name: given(&self.name),
            address_line1: given(&self.address_line1),
            zip: given(&self.zip),
            town: given(&self.town),
            country_code: given(&self.country_code),
            display_name: Some(given(&self.display_name)),
            address_line2: Some(given(&self.address_line2)),
            state: Some(given(&self.state)),
            vat_id: Some(given(&self.vat_id)),
            tax_number: Some(given(&self.tax_number)),
            economy_id: Some(given(&self.economy_id)),
            contact_person_id: Some(given(&self.contact_person_id)),
            billing_address_id: Some(given(&self.billing_address_id)),
            metadata: Some(layout::parse_metadata(self.metadata.as_deref())?.unwrap_or_default()),
        })
    }
}

fn organization_form(
    signed: &Signed,
    action: &str,
    button: &str,
    form: &OrganizationForm,
    managers: Option<&[Organization]>,
    errors: &Errors,
) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let fields = [
        ("Organization name", "name", &form.name, true, None),
        (
            "Display name",
            "display_name",
            &form.display_name,
            false,
            None,
        ),
        ("Address", "address_line1", &form.address_line1, true, None),
        (
            "Address line 2",
            "address_line2",
            &form.address_line2,
            false,
            None,
        ),
        ("Zip", "zip", &form.zip, true, None),
        ("Town", "town", &form.town, true, None),
        ("State", "state", &form.state, false, None),
        (
            "Country",
            "country_code",
            &form.country_code,
            true,
            Some("ISO 3166 alpha-3 code, e.g. DEU"),
        ),
        ("VAT id", "vat_id", &form.vat_id, false, None),
        ("Tax number", "tax_number", &form.tax_number, false, None),
        ("Economy id", "economy_id", &form.economy_id, false, None),
        (
            "Contact person id",
            "contact_person_id",
            &form.contact_person_id,
            false,
            None,
        ),
        (
            "Billing address id",
            "billing_address_id",
            &form.billing_address_id,
            false,
            None,
        ),
    ];
    html! {
        (errors.notice(&FIELDS))
        form.card method="post" action=(action) novalidate {
            (csrf(signed))
            @if let Some(managers) = managers {
                div.field {
                    label for="field-managed_by" { "Managed by" }
                    select #field-managed_by name="managed_by" {
                        @for manager in managers {
                            option value=(manager.id) selected[form.managed_by.as_deref() == Some(manager.id.to_string().as_str())] { (manager.name) }
                        }
                    }
                }
            }
            @for (label, name, v, required, hint) in fields {
                @let typed = value(v);
                @let field = Field::new(label, name, "text", &typed);
                @let field = if required { field } else { field.optional() };
                @let field = match hint { Some(hint) => field.hint(hint), None => field };
                (field.render(errors))
            }
            (Field::new("Metadata", "metadata", "textarea", &value(&form.metadata)).optional().hint(r#"A JSON object of strings, e.g. {"region": "north"}; empty for none."#).render(errors))
            div.actions {
                button type="submit" { (button) }
                a href="/console/organizations" { "Cancel" }
            }
        }
    }
}

/// The organizations a new one may be managed by: the caller's tree.
async fn managers(state: &AppState, signed: &Signed) -> Vec<Organization> {
    let listing = OrganizationQuery {
        order_by: OrganizationOrder::Name,
        descending: false,
        limit: SHOWN,
        offset: 0,
        managed_by: None,
        managed: None,
        env: None,
        after: None,
    };
    let mut found = organizations::list(state, &signed.actor, &listing)
        .await
        .map(|page| page.items)
        .unwrap_or_default();
    // The caller's own first: the default.
    found.sort_by_key(|o| o.id != signed.actor.organization_id);
    found
}

pub async fn new_page(State(state): State<AppState>, Person(signed): Person) -> Response {
    if signed.actor.require(Action::ManageOrganizations).is_err() {
        return refusal(OrganizationError::Forbidden);
    }
    let managers = managers(&state, &signed).await;
    let body = html! {
        h1 { "New organization" }
        (organization_form(&signed, "/console/organizations", "Create organization", &OrganizationForm::default(), Some(&managers), &Errors::default()))
    };
    signed_page(&state, &signed, "New organization", body)
        .await
        .into_response()
}

/// The form's errors beside their fields, or what is refused as a page.
fn form_errors(error: OrganizationError) -> Result<Errors, OrganizationError> {
    match error {
        OrganizationError::Invalid(error) => Ok(error.into()),
        other => Err(other),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Form(form): Form<OrganizationForm>,
) -> Response {
    let manager = form.managed_by.clone();
    let outcome = match form.fields() {
        Ok(fields) => {
            organizations::create(&state, &signed.actor, &context, manager.as_deref(), fields).await
        }
        Err(error) => Err(OrganizationError::Invalid(error)),
    };
    match outcome {
        Ok(_) => layout::see_other("/console/organizations?notice=created"),
        Err(error) => match form_errors(error) {
            Ok(errors) => {
                let managers = managers(&state, &signed).await;
                let body = html! {
                    h1 { "New organization" }
                    (organization_form(&signed, "/console/organizations", "Create organization", &form, Some(&managers), &errors))
                };
                (
                    StatusCode::BAD_REQUEST,
                    signed_page(&state, &signed, "New organization", body).await,
                )
                    .into_response()
            }
            Err(error) => refusal(error),
        },
    }
}

pub async fn edit_page(
    State(state): State<AppState>,
    Person(signed): Person,
    Path(id): Path<String>,
) -> Response {
    if signed.actor.require(Action::ManageOrganizations).is_err() {
        return refusal(OrganizationError::Forbidden);
    }
    let organization = match organizations::visible(&state, &signed.actor, &id).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let action = format!("/console/organizations/{id}/edit");
    let body = html! {
        h1 { "Edit " (organization.name) }
        (organization_form(&signed, &action, "Save", &OrganizationForm::of(&organization), None, &Errors::default()))
    };
    signed_page(&state, &signed, "Edit organization", body)
        .await
        .into_response()
}

pub async fn update(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
    Form(form): Form<OrganizationForm>,
) -> Response {
    let organization = match organizations::visible(&state, &signed.actor, &id).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let name = organization.name.clone();
    // Required fields left empty are refused, as on create.
    let outcome = match form.fields() {
        Err(error) => Err(OrganizationError::Invalid(error)),
        Ok(fields) => {
            let missing = [
                ("name", &fields.name),
                ("address_line1", &fields.address_line1),
                ("zip", &fields.zip),
                ("town", &fields.town),
                ("country_code", &fields.country_code),
            ]
            .into_iter()
            .find_map(|(field, value)| keyplane_core::organizations::required(field, value).err());
            match missing {
                Some(error) => Err(OrganizationError::Invalid(error)),
                None => {
                    organizations::update(&state, &signed.actor, &context, organization, fields)
                        .await
                }
            }
        }
    };
    match outcome {
        Ok(_) => layout::see_other("/console/organizations?notice=updated"),
        Err(error) => match form_errors(error) {
            Ok(errors) => {
                let action = format!("/console/organizations/{id}/edit");
                let body = html! {
                    h1 { "Edit " (name) }
                    (organization_form(&signed, &action, "Save", &form, None, &errors))
                };
                (
                    StatusCode::BAD_REQUEST,
                    signed_page(&state, &signed, "Edit organization", body).await,
                )
                    .into_response()
            }
            Err(error) => refusal(error),
        },
    }
}

pub async fn enable_live(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Path(id): Path<String>,
) -> Response {
    let organization = match organizations::visible(&state, &signed.actor, &id).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    match organizations::enable_env(&state, &signed.actor, &context, organization, Env::Live).await
    {
        Ok(_) => layout::see_other("/console/organizations?notice=live"),
        Err(error) => refusal(error),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    confirm_name: Option<String>,
}

fn delete_form(
    signed: &Signed,
    organization: &Organization,
    typed: &str,
    errors: &Errors,
) -> Markup {
    html! {
        h1 { "Delete " (organization.name) }
        p { "Deleting the organization deletes its API keys, memberships and invitations. This cannot be undone." }
        form.card method="post" action=(format!("/console/organizations/{}/delete", organization.id)) novalidate {
            (csrf(signed))
            (Field::new("Type the organization's name to confirm", "confirm_name", "text", typed).hint(&organization.name).render(errors))
            div.actions {
                button.danger type="submit" { "Delete" }
                a href="/console/organizations" { "Cancel" }
            }
        }
    }
}

pub async fn delete_page(
    State(state): State<AppState>,
    Person(signed): Person,
    Path(id): Path<String>,
) -> Response {
    if signed.actor.require(Action::ManageOrganizations).is_err() {
        return refusal(OrganizationError::Forbidden);
    }
    let organization = match organizations::visible(&state, &signed.actor, &id).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let body = delete_form(&signed, &organization, "", &Errors::default());
    signed_page(&state, &signed, "Delete organization", body)
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
    let organization = match organizations::visible(&state, &signed.actor, &id).await {
        Ok(organization) => organization,
        Err(error) => return refusal(error),
    };
    let typed = form.confirm_name.unwrap_or_default();
    if typed != organization.name {
        let errors = Errors::field("confirm_name", "must be the organization's name");
        let body = delete_form(&signed, &organization, &typed, &errors);
        return (
            StatusCode::BAD_REQUEST,
            signed_page(&state, &signed, "Delete organization", body).await,
        )
            .into_response();
    }
    match organizations::delete(&state, &signed.actor, &context, organization).await {
        Ok(()) => layout::see_other("/console/organizations?notice=deleted"),
        Err(error) => refusal(error),
    }
}
