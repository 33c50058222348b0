//! The web console (contract §10): server-rendered pages for people, under `/console`, with the
//! links mailed to them (`/accept-invitation`). Pages call the same use cases, policy table and
//! audit as the API ([`crate::service`]); there is no second authorization path.
//!
//! - [`session`]: the session cookie, and the one middleware every console request passes: it
//!   checks the `Origin` of every POST, resolves the session (a request without one goes to the
//!   sign-in page) and checks the CSRF token of every POST from a signed-in person.
//! - [`layout`]: the page skeleton, forms and fields; [`assets`]: htmx, the stylesheet and
//!   the script, served with hashed names.
//! - One module per screen: [`entry`] (sign-in, forgotten passwords, first-run setup, accepting
//!   an invitation, the organization switcher, signing out), [`organizations`],
//!   [`api_keys`], [`people`], [`audit`], [`account`].

pub mod account;
pub mod api_keys;
pub mod assets;
pub mod audit;
pub mod entry;
pub mod layout;
pub mod organizations;
pub mod people;
pub mod session;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/api-keys") }),
        )
        .route("/console/assets/{name}", get(assets::serve))
        .route(
            "/console/sign-in",
            get(entry::sign_in_page).post(entry::sign_in),
        )
        .route(
            "/console/forgot-password",
            get(entry::forgot_password_page).post(entry::forgot_password),
        )
        .route("/reset-password", get(entry::reset_password_page))
        .route("/console/reset-password", post(entry::reset_password))
        .route("/console/setup", get(entry::setup_page).post(entry::set_up))
        .route("/accept-invitation", get(entry::accept_page))
        .route("/console/accept-invitation", post(entry::accept))
        .route("/console/sign-out", post(entry::sign_out))
        .route("/console/organization", post(entry::switch_organization))
        .route(
            "/console/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route("/console/api-keys/new", get(api_keys::new_page))
        .route("/console/api-keys/{id}/status", post(api_keys::set_status))
        .route(
            "/console/api-keys/{id}/edit",
            get(api_keys::edit_page).post(api_keys::edit),
        )
        .route(
            "/console/api-keys/{id}/rotate",
            get(api_keys::rotate_page).post(api_keys::rotate),
        )
        .route(
            "/console/api-keys/{id}/delete",
            get(api_keys::delete_page).post(api_keys::delete),
        )
        .route("/console/account", get(account::account_page))
        .route("/console/account/password", post(account::change_password))
        .route(
            "/console/account/sign-out-everywhere",
            post(account::sign_out_everywhere),
        )
        .route(
            "/console/organizations",
            get(organizations::tree).post(organizations::create),
        )
        .route("/console/organizations/new", get(organizations::new_page))
        .route(
            "/console/organizations/{id}/edit",
            get(organizations::edit_page).post(organizations::update),
        )
        .route(
            "/console/organizations/{id}/live",
            post(organizations::enable_live),
        )
        .route(
            "/console/organizations/{id}/delete",
            get(organizations::delete_page).post(organizations::delete),
        )
        .route("/console/people", get(people::list))
        .route(
            "/console/people/invite",
            get(people::invite_page).post(people::invite),
        )
        .route("/console/people/{id}/role", post(people::change_role))
        .route("/console/people/{id}/status", post(people::change_status))
        .route("/console/people/{id}/remove", post(people::remove))
        .route("/console/invitations/{id}/resend", post(people::resend))
        .route("/console/invitations/{id}/revoke", post(people::revoke))
        .route("/console/audit-log", get(audit::page_of_events))
        .layer(from_fn_with_state(state, session::guard))
        .layer(from_fn(console_headers))
}

/// Whether an address is the console's: its pages under `/console`, and the links mailed to
/// people. An unknown one of these gets the console's HTML 404, not the API's JSON body.
pub fn owns(path: &str) -> bool {
    path == "/console"
        || path.starts_with("/console/")
        || path == "/reset-password"
        || path == "/accept-invitation"
}

/// The page for an unknown console address (or a method its route does not take), with the
/// console's headers.
pub fn unknown(status: StatusCode) -> Response {
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        "This page does not take that kind of request."
    } else {
        "There is no such page."
    };
    let mut response = layout::refused(status, message);
    protect(response.headers_mut());
    response
}

async fn console_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    protect(response.headers_mut());
    response
}

/// Headers on every console response. The policy allows this server's own scripts and styles
/// only: no inline script or style, no other host, no framing.
fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Pages hold tenant data and one-time secrets; only the hashed assets are cacheable.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}
