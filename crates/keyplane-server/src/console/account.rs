//! The Account screen (`Sign out everywhere`), and the pages of screens still to come.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use crate::console::layout::{self, Chrome, Section, csrf, page};
use crate::console::session::{self, Person, Signed};
use crate::service::sessions;
use crate::state::AppState;

async fn signed_page(
    state: &AppState,
    signed: &Signed,
    section: Section,
    title: &str,
    body: Markup,
) -> Markup {
    let organizations = sessions::organizations(state, signed)
        .await
        .unwrap_or_default();
    let chrome = Chrome {
        signed,
        organizations: &organizations,
        section,
    };
    page(title, Some(&chrome), body)
}

pub async fn account_page(State(state): State<AppState>, Person(signed): Person) -> Response {
    let user = state
        .store()
        .user(signed.session.user_id)
        .await
        .ok()
        .flatten();
    let body = html! {
        h1 { "Account" }
        div.card {
            dl.facts {
                dt { "Email" } dd { (user.as_ref().map(|u| u.email.as_str().to_owned()).unwrap_or_default()) }
                dt { "Role" } dd { (layout::role_name(signed.actor.role)) }
                dt { "Signed in" } dd { (layout::time(signed.session.created_at)) }
            }
        }
        h2 { "Sessions" }
        div.card {
            p { "Signing out everywhere ends every console session of yours, in every browser and on every Keyplane node." }
            form method="post" action="/console/account/sign-out-everywhere" {
                (csrf(&signed))
                button.danger type="submit" { "Sign out everywhere" }
            }
        }
    };
    signed_page(&state, &signed, Section::Account, "Account", body)
        .await
        .into_response()
}

pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    Person(signed): Person,
) -> Response {
    if let Err(error) = sessions::sign_out_everywhere(&state, &signed).await {
        tracing::warn!(%error, "console sign-out everywhere failed");
        return layout::refused(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "Keyplane cannot reach its database just now. Try again in a moment.",
        );
    }
    let mut response = layout::see_other("/console/sign-in");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::cleared_cookie());
    response
}

/// A screen not built yet: says so plainly, and how to do it meanwhile.
pub async fn coming(
    State(state): State<AppState>,
    Person(signed): Person,
    uri: axum::http::Uri,
) -> Response {
    let (section, title) = match uri.path() {
        "/console/organizations" => (Section::Organizations, "Organizations"),
        "/console/people" => (Section::People, "People"),
        _ => (Section::AuditLog, "Audit log"),
    };
    let body = html! {
        h1 { (title) }
        div.card.empty {
            p { "This screen is coming in the next release of the console." }
            p { "Meanwhile the same operations are in the API: " a href="/docs" { "API reference" } "." }
        }
    };
    signed_page(&state, &signed, section, title, body)
        .await
        .into_response()
}
