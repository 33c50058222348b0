//! The ways in: sign-in, the first-run setup, accepting an invitation; and the organization
//! switcher and signing out. Each form posts, and success answers with the session cookie and
//! a redirect (Post/Redirect/Get); a refused form is shown again with what was typed (never a
//! password) and the error beside its field.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_core::secrets::PlainCredential;
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::layout::{self, Errors, Field, page};
use crate::console::session::{self, Person, safe_next};
use crate::service::bootstrap::{self, BootstrapError};
use crate::service::context::RequestContext;
use crate::service::password_reset::{self, ResetError};
use crate::service::people::{self, UserError};
use crate::service::sessions;
use crate::service::setup::{self, SetupError};
use crate::service::tokens::AuthError;
use crate::state::AppState;

/// Longest email or password read (as the API: anything longer cannot be an account's).
const MAX_CREDENTIAL_LENGTH: usize = 512;

/// A text field as a form sends it: empty means not given.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// The API's check of a credential field: present, not empty, not absurdly long.
fn credential<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, Errors> {
    match value.as_deref() {
        None => Err(Errors::field(field, "is required")),
        Some("") => Err(Errors::field(field, "must not be empty")),
        Some(v) if v.len() > MAX_CREDENTIAL_LENGTH => Err(Errors::field(field, "is too long")),
        Some(v) => Ok(v),
    }
}

/// Signed in: the cookie, and on to `to`.
fn signed_in(id: &PlainCredential, to: &str) -> Response {
    let mut response = layout::see_other(to);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::session_cookie(id.expose()));
    response
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    email: Option<String>,
    password: Option<String>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn sign_in_form(email: &str, next: &str, errors: &Errors, empty_store: bool) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if empty_store {
                p.notice.warn {
                    "Keyplane has no organization yet. Open the setup link the server printed on its terminal when it started."
                }
            }
            (errors.notice(&["email", "password"]))
            form.card method="post" action="/console/sign-in" novalidate {
                input type="hidden" name="next" value=(next);
                (Field::new("Email", "email", "email", email).autocomplete("username").render(errors))
                (Field::new("Password", "password", "password", "").autocomplete("current-password").render(errors))
                div.actions {
                    button type="submit" { "Sign in" }
                    a href="/console/forgot-password" { "Forgot password?" }
                }
            }
        },
    )
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    Query(query): Query<NextQuery>,
) -> Response {
    let empty = !state.store().has_organizations().await.unwrap_or(true);
    sign_in_form(
        "",
        &safe_next(query.next.as_deref()),
        &Errors::default(),
        empty,
    )
    .into_response()
}

pub async fn sign_in(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let email = form.email.clone().unwrap_or_default();
    let refuse = |status: StatusCode, errors: Errors| {
        (status, sign_in_form(&email, &next, &errors, false)).into_response()
    };
    let (address, password) = match (
        credential("email", &form.email),
        credential("password", &form.password),
    ) {
        (Ok(address), Ok(password)) => (address, password),
        (Err(errors), _) | (_, Err(errors)) => return refuse(StatusCode::BAD_REQUEST, errors),
    };
    match sessions::sign_in(&state, address, password, None, &context).await {
        Ok(id) => signed_in(&id, &next),
        Err(AuthError::InvalidCredentials) => refuse(
            StatusCode::UNAUTHORIZED,
            Errors::form("Invalid credentials: the email or the password is wrong."),
        ),
        Err(AuthError::Throttled(seconds)) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            Errors::form(format!(
                "Too many failed attempts. Try again in {seconds} seconds."
            )),
        ),
        Err(AuthError::Busy) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            Errors::form("Keyplane is busy. Try again in a moment."),
        ),
        Err(AuthError::Store(error)) => {
            tracing::warn!(%error, "console sign-in failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                Errors::form("Keyplane cannot reach its database just now. Try again in a moment."),
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ForgotQuery {
    sent: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ForgotForm {
    email: Option<String>,
}

fn forgot_form(email: &str, sent: bool, errors: &Errors) -> Markup {
    page(
        "Forgot password",
        None,
        html! {
            h1 { "Forgot password" }
            @if sent {
                p.notice.ok role="status" {
                    "If an account uses that address, a link to set a new password is on its way. It works once, for one hour."
                }
            } @else {
                p { "Enter the address you sign in with. We will mail you a link to set a new password." }
            }
            (errors.notice(&["email"]))
            form.card method="post" action="/console/forgot-password" novalidate {
                (Field::new("Email", "email", "email", email).autocomplete("username").render(errors))
                div.actions {
                    button type="submit" { "Send reset link" }
                    a href="/console/sign-in" { "Back to sign-in" }
                }
            }
        },
    )
}

pub async fn forgot_password_page(Query(query): Query<ForgotQuery>) -> Response {
    forgot_form("", query.sent.is_some(), &Errors::default()).into_response()
}

/// Asks for a reset link. Known and unknown addresses get the same answer: a redirect to the
/// page saying a link is on its way if the address is an account's.
pub async fn forgot_password(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<ForgotForm>,
) -> Response {
    let email = form.email.clone().unwrap_or_default();
    let refuse = |status: StatusCode, errors: Errors| {
        (status, forgot_form(&email, false, &errors)).into_response()
    };
    let address = match credential("email", &form.email) {
        Ok(address) => address,
        Err(errors) => return refuse(StatusCode::BAD_REQUEST, errors),
    };
    match password_reset::request(&state, address, &context).await {
        Ok(()) => layout::see_other("/console/forgot-password?sent=1"),
        Err(ResetError::Invalid(error)) => refuse(StatusCode::BAD_REQUEST, error.into()),
        Err(ResetError::Throttled(seconds)) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            Errors::form(format!(
                "Too many requests. Try again in {seconds} seconds."
            )),
        ),
        Err(error) => {
            tracing::warn!(%error, "a password reset request failed");
            unavailable()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ResetForm {
    token: Option<String>,
    password: Option<String>,
}

fn reset_form(form: &ResetForm, errors: &Errors) -> Markup {
    page(
        "Set a new password",
        None,
        html! {
            h1 { "Set a new password" }
            p { "Choose a new password. Every session of yours ends, and you are signed in here." }
            p.notice.error #token-missing hidden { "This page was opened without its token. Open the full link from the reset mail." }
            (errors.notice(&["password"]))
            form.card method="post" action="/console/reset-password" data-token-from-fragment novalidate {
                (Field::new("Reset token", "token", "text", &form.token.clone().unwrap_or_default()).hint("The part of the reset link after #token=").render(errors))
                (Field::new("Password", "password", "password", "").hint("12 to 256 characters").autocomplete("new-password").render(errors))
                div.actions { button type="submit" { "Set password" } }
            }
        },
    )
}

pub async fn reset_password_page() -> Response {
    reset_form(&ResetForm::default(), &Errors::default()).into_response()
}

const INVALID_RESET_LINK: &str =
    "token: the reset link is invalid, already used or expired. Ask for a new one.";

pub async fn reset_password(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<ResetForm>,
) -> Response {
    let refuse =
        |status: StatusCode, errors: Errors| (status, reset_form(&form, &errors)).into_response();
    let token = form.token.clone().unwrap_or_default();
    if token.is_empty() || token.len() > MAX_CREDENTIAL_LENGTH {
        return refuse(StatusCode::BAD_REQUEST, Errors::form(INVALID_RESET_LINK));
    }
    let password = form.password.clone().unwrap_or_default();
    match password_reset::reset(&state, &context, &token, password).await {
        Ok(Some(membership)) => match sessions::start(&state, &membership, Vec::new()).await {
            Ok(id) => signed_in(&id, "/console/api-keys"),
            Err(_) => layout::see_other("/console/sign-in"),
        },
        // A person in no organization any more has a password but nothing to sign in to.
        Ok(None) => layout::see_other("/console/sign-in"),
        Err(ResetError::Invalid(error)) => refuse(StatusCode::BAD_REQUEST, error.into()),
        Err(ResetError::InvalidLink) => {
            refuse(StatusCode::BAD_REQUEST, Errors::form(INVALID_RESET_LINK))
        }
        Err(ResetError::Busy | ResetError::Throttled(_)) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            Errors::form("Keyplane is busy. Try again in a moment."),
        ),
        Err(ResetError::Store(error)) => {
            tracing::warn!(%error, "a password reset failed");
            unavailable()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SetupForm {
    token: Option<String>,
    name: Option<String>,
    address_line1: Option<String>,
    zip: Option<String>,
    town: Option<String>,
    country_code: Option<String>,
    email: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

const SETUP_FIELDS: [&str; 9] = [
    "name",
    "address_line1",
    "zip",
    "town",
    "country_code",
    "email",
    "password",
    "first_name",
    "last_name",
];

fn setup_form(form: &SetupForm, errors: &Errors) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let (name, address, zip, town, country) = (
        value(&form.name),
        value(&form.address_line1),
        value(&form.zip),
        value(&form.town),
        value(&form.country_code),
    );
    let (email, first, last) = (
        value(&form.email),
        value(&form.first_name),
        value(&form.last_name),
    );
    page(
        "Set up Keyplane",
        None,
        html! {
            h1 { "Set up Keyplane" }
            p { "Create the first organization and its owner. You will be signed in as the owner." }
            p.notice.error #token-missing hidden { "This page was opened without its setup token. Open the full link the server printed on its terminal." }
            (errors.notice(&SETUP_FIELDS))
            form.card method="post" action="/console/setup" data-token-from-fragment novalidate {
                // Filled from the link's fragment and hidden by the script; without JavaScript,
                // paste the part after `#token=`.
                (Field::new("Setup token", "token", "text", &value(&form.token)).hint("The part of the setup link after #token=").render(errors))
                h2 { "Organization" }
                (Field::new("Organization name", "name", "text", &name).autocomplete("organization").render(errors))
                (Field::new("Address", "address_line1", "text", &address).autocomplete("address-line1").render(errors))
                (Field::new("Zip", "zip", "text", &zip).autocomplete("postal-code").render(errors))
                (Field::new("Town", "town", "text", &town).autocomplete("address-level2").render(errors))
                (Field::new("Country", "country_code", "text", &country).hint("ISO 3166 alpha-3 code, e.g. DEU").render(errors))
                h2 { "Owner" }
                (Field::new("Email", "email", "email", &email).autocomplete("email").render(errors))
                (Field::new("Password", "password", "password", "").hint("12 to 256 characters").autocomplete("new-password").render(errors))
                (Field::new("First name", "first_name", "text", &first).autocomplete("given-name").render(errors))
                (Field::new("Last name", "last_name", "text", &last).autocomplete("family-name").render(errors))
                div.actions { button type="submit" { "Create organization" } }
            }
        },
    )
}

fn not_found() -> Response {
    layout::refused(StatusCode::NOT_FOUND, "There is no such page.")
}

pub async fn setup_page(State(state): State<AppState>) -> Response {
    match state.store().has_organizations().await {
        Ok(false) => setup_form(&SetupForm::default(), &Errors::default()).into_response(),
        Ok(true) => not_found(),
        Err(_) => unavailable(),
    }
}

fn unavailable() -> Response {
    layout::refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "Keyplane cannot reach its database just now. Try again in a moment.",
    )
}

pub async fn set_up(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<SetupForm>,
) -> Response {
    match state.store().has_organizations().await {
        Ok(false) => {}
        Ok(true) => return not_found(),
        Err(_) => return unavailable(),
    }
    let token = form.token.clone().unwrap_or_default();
    if token.len() > MAX_CREDENTIAL_LENGTH || !state.is_setup_token(&token) {
        return layout::refused(
            StatusCode::FORBIDDEN,
            "This setup link is not valid. Open the link the server printed on its terminal when it started (it works until it is used or the server stops).",
        );
    }
    let setup = setup::Setup {
        organization_name: given(form.name.clone()),
        address: bootstrap::Address {
            address_line1: given(form.address_line1.clone()),
            zip: given(form.zip.clone()),
            town: given(form.town.clone()),
            country_code: given(form.country_code.clone()),
        },
        email: given(form.email.clone()),
        password: given(form.password.clone()),
        first_name: given(form.first_name.clone()),
        last_name: given(form.last_name.clone()),
    };
    let refuse =
        |errors: Errors| (StatusCode::BAD_REQUEST, setup_form(&form, &errors)).into_response();
    match setup::set_up(&state, &context, setup).await {
        Ok(membership) => {
            state.disarm_setup_token();
            match sessions::start(&state, &membership, Vec::new()).await {
                Ok(id) => signed_in(&id, "/console/api-keys"),
                Err(_) => layout::see_other("/console/sign-in"),
            }
        }
        Err(SetupError::Bootstrap(BootstrapError::Invalid(error))) => refuse(error.into()),
        Err(SetupError::Owner(UserError::Invalid(error))) => refuse(error.into()),
        Err(SetupError::Bootstrap(BootstrapError::AlreadyBootstrapped)) => not_found(),
        Err(error) => {
            tracing::warn!(%error, "console setup failed");
            unavailable()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AcceptForm {
    token: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

fn accept_form(form: &AcceptForm, errors: &Errors) -> Markup {
    let first = form.first_name.clone().unwrap_or_default();
    let last = form.last_name.clone().unwrap_or_default();
    page(
        "Accept invitation",
        None,
        html! {
            h1 { "Accept invitation" }
            p { "Choose a password to join. You will be signed in afterwards." }
            p.notice.error #token-missing hidden { "This page was opened without its invitation token. Open the full link from the invitation mail." }
            (errors.notice(&["password", "first_name", "last_name"]))
            form.card method="post" action="/console/accept-invitation" data-token-from-fragment novalidate {
                (Field::new("Invitation token", "token", "text", &form.token.clone().unwrap_or_default()).hint("The part of the invitation link after #token=").render(errors))
                (Field::new("Password", "password", "password", "").hint("12 to 256 characters").autocomplete("new-password").render(errors))
                (Field::new("First name", "first_name", "text", &first).optional().autocomplete("given-name").render(errors))
                (Field::new("Last name", "last_name", "text", &last).optional().autocomplete("family-name").render(errors))
                div.actions { button type="submit" { "Accept invitation" } }
            }
        },
    )
}

pub async fn accept_page() -> Response {
    accept_form(&AcceptForm::default(), &Errors::default()).into_response()
}

pub async fn accept(
    State(state): State<AppState>,
    context: RequestContext,
    Form(form): Form<AcceptForm>,
) -> Response {
    let refuse =
        |errors: Errors| (StatusCode::BAD_REQUEST, accept_form(&form, &errors)).into_response();
    let token = form.token.clone().unwrap_or_default();
    if token.is_empty() || token.len() > MAX_CREDENTIAL_LENGTH {
        return refuse(Errors::form(
            "token: the invitation is invalid, already used, revoked or expired",
        ));
    }
    let password = form.password.clone().unwrap_or_default();
    match people::accept(
        &state,
        &context,
        &token,
        password,
        given(form.first_name.clone()),
        given(form.last_name.clone()),
    )
    .await
    {
        Ok((_, membership)) => match sessions::start(&state, &membership, Vec::new()).await {
            Ok(id) => signed_in(&id, "/console/api-keys"),
            Err(_) => layout::see_other("/console/sign-in"),
        },
        Err(UserError::Invalid(error)) => refuse(error.into()),
        Err(UserError::InvalidInvitation) => refuse(Errors::form(
            "token: the invitation is invalid, already used, revoked or expired",
        )),
        Err(UserError::Busy) => refuse(Errors::form("Keyplane is busy. Try again in a moment.")),
        Err(error) => {
            tracing::warn!(%error, "accepting an invitation in the console failed");
            unavailable()
        }
    }
}

pub async fn sign_out(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
) -> Response {
    if let Err(error) = sessions::sign_out(&state, &signed, &context).await {
        tracing::warn!(%error, "console sign-out failed");
        return unavailable();
    }
    let mut response = layout::see_other("/console/sign-in");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::cleared_cookie());
    response
}

#[derive(Debug, Default, Deserialize)]
pub struct SwitchForm {
    organization_id: Option<String>,
}

pub async fn switch_organization(
    State(state): State<AppState>,
    Person(signed): Person,
    Form(form): Form<SwitchForm>,
) -> Response {
    let Some(id) = form.organization_id.and_then(|id| id.parse().ok()) else {
        return layout::refused(StatusCode::BAD_REQUEST, "organization_id: must be a UUID");
    };
    match sessions::switch(&state, &signed, id).await {
        Ok(true) => layout::see_other("/console/api-keys"),
        // Not one of the person's organizations: as if it did not exist.
        Ok(false) => not_found(),
        Err(_) => unavailable(),
    }
}
