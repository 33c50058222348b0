//! The Audit log screen: the organization's events, newest first, with filters by action,
//! actor and time range, and paging. Read through [`crate::service::audit`], as the API reads it.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyplane_core::ValidationError;
use keyplane_core::audit::AuditAction;
use keyplane_core::records::AuditQuery;
use maud::html;
use serde::Deserialize;

use crate::console::layout::{self, Errors, Paging, Section};
use crate::console::session::Person;
use crate::service::api_keys;
use crate::service::audit::{self, AuditError};
use crate::state::AppState;

/// Events per page.
const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct AuditForm {
    action: Option<String>,
    actor_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page: Option<String>,
}

/// The filters, with the API's rules and messages (by its parameter names).
fn query(form: &AuditForm) -> Result<(AuditQuery, Paging), ValidationError> {
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    // As the API: any name of 1 to 64 characters (an unknown one matches nothing).
    let actions = match given(&form.action) {
        None => Vec::new(),
        Some(action) if action.len() > 64 => {
            return Err(ValidationError::new("action", "must be 1 to 64 characters"));
        }
        Some(action) => vec![action],
    };
    let actor_id = given(&form.actor_id);
    if actor_id.as_ref().is_some_and(|a| a.len() > 64) {
        return Err(ValidationError::new(
            "actor_id",
            "must be 1 to 64 characters",
        ));
    }
    let time = |field: &str, value: &Option<String>| {
        given(value)
            .map(|text| {
                layout::parse_datetime(&text).ok_or_else(|| {
                    ValidationError::new(field, "must be a date and time (YYYY-MM-DDTHH:MM)")
                })
            })
            .transpose()
    };
    let since = time("since", &form.since)?;
    // Until the end of the minute given, inclusive.
    let until = time("until", &form.until)?.map(|at| at + 59);
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ValidationError::new("since", "must not be after until"));
    }
    let paging = Paging::read(form.page.as_deref(), PAGE_SIZE);
    Ok((
        AuditQuery {
            limit: paging.size,
            offset: paging.offset(),
            actions,
            actor_id,
            since,
            until,
            oldest_first: false,
            after: None,
        },
        paging,
    ))
}

pub async fn page_of_events(
    State(state): State<AppState>,
    Person(signed): Person,
    Query(form): Query<AuditForm>,
) -> Response {
    let organization = match api_keys::organization(&state, &signed.actor, None).await {
        Ok(organization) => organization,
        Err(_) => return layout::refused(StatusCode::NOT_FOUND, "Organization not found."),
    };
    let (found, errors, paging) = match query(&form) {
        Ok((query, paging)) => {
            match audit::list(&state, &signed.actor, &organization, &query).await {
                Ok(found) => (Some((found.items, found.count)), Errors::default(), paging),
                Err(AuditError::Forbidden) => {
                    return layout::refused(
                        StatusCode::FORBIDDEN,
                        "Your role does not allow reading the audit log.",
                    );
                }
                Err(AuditError::Store(error)) => {
                    tracing::warn!(%error, "console audit log failed");
                    return layout::refused(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Keyplane cannot reach its database just now. Try again in a moment.",
                    );
                }
            }
        }
        Err(error) => (None, Errors::from(error), Paging::read(None, PAGE_SIZE)),
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let href = |page: u64| {
        let mut url = form_urlencoded::Serializer::new(String::new());
        for (name, v) in [
            ("action", &form.action),
            ("actor_id", &form.actor_id),
            ("since", &form.since),
            ("until", &form.until),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                url.append_pair(name, v);
            }
        }
        url.append_pair("page", &page.to_string());
        format!("/console/audit-log?{}", url.finish())
    };
    let selected = form.action.clone().unwrap_or_default();
    let body = html! {
        h1 { "Audit log" }
        (errors.notice(&["action", "actor_id", "since", "until"]))
        form.filters method="get" action="/console/audit-log"
            hx-get="/console/audit-log" hx-trigger="change" hx-target="#events" hx-select="#events" hx-swap="outerHTML" hx-push-url="true" {
            div.field {
                label for="field-action" { "Action" }
                select #field-action name="action" {
                    option value="" { "All actions" }
                    @for action in AuditAction::ALL {
                        option value=(action.as_str()) selected[selected == action.as_str()] { (action.as_str()) }
                    }
                }
            }
            (layout::Field::new("Actor", "actor_id", "text", &value(&form.actor_id)).optional().render(&errors))
            (layout::Field::new("From", "since", "datetime-local", &value(&form.since)).optional().render(&errors))
            (layout::Field::new("To", "until", "datetime-local", &value(&form.until)).optional().render(&errors))
            button.quiet type="submit" { "Apply" }
        }
        p.muted { "Times are UTC. Newest first." }
        div #events {
            @if let Some((events, count)) = &found {
                @if events.is_empty() {
                    div.empty.card { p { "No events match these filters." } }
                } @else {
                    div.table-wrap {
                        table {
                            thead {
                                tr {
                                    th scope="col" { "Time" }
                                    th scope="col" { "Action" }
                                    th scope="col" { "Actor" }
                                    th scope="col" { "Target" }
                                    th scope="col" { "Address" }
                                }
                            }
                            tbody {
                                @for event in events {
                                    tr {
                                        td { (layout::time(event.created_at)) }
                                        td { code { (event.action) } }
                                        td {
                                            (event.actor_type.as_str())
                                            @if let Some(id) = &event.actor_id { br; span.muted { code { (id) } } }
                                        }
                                        td { (event.target_type) br; span.muted { code { (event.target_id) } } }
                                        td { (event.ip.clone().unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                    (paging.nav(*count, "events", "events", href))
                }
            }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = layout::signed_page(&state, &signed, Section::AuditLog, "Audit log", body).await;
    (status, page).into_response()
}
