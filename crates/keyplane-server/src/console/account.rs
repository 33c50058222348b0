//! The Account screen: `Change password` and `Sign out everywhere`.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use crate::console::layout::{self, Errors, Field, Section, csrf, signed_page};
use crate::console::session::{self, Person, Signed};
use crate::service::context::RequestContext;
use crate::service::sessions::{self, PasswordChangeError};
use crate::service::tokens::AuthError;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct AccountQuery {
    notice: Option<String>,
}

async fn account_body(
    state: &AppState,
    signed: &Signed,
    notice: Option<&str>,
    errors: &Errors,
) -> Markup {
    let user = state
        .store()
        .user(signed.session.user_id)
        .await
        .ok()
        .flatten();
    html! {
        h1 { "Account" }
        @if let Some(notice) = notice {
            p.notice.ok role="status" { (notice) }
        }
        div.card {
            dl.facts {
                dt { "Email" } dd { (user.as_ref().map(|u| u.email.as_str().to_owned()).unwrap_or_default()) }
                dt { "Role" } dd { (layout::role_name(signed.actor.role)) }
                dt { "Signed in" } dd { (layout::time(signed.session.created_at)) }
            }
        }
        h2 { "Change password" }
        (errors.notice(&["current_password", "new_password"]))
        form.card method="post" action="/console/account/password" novalidate {
            (csrf(signed))
            (Field::new("Current password", "current_password", "password", "").autocomplete("current-password").render(errors))
            (Field::new("New password", "new_password", "password", "").hint("12 to 256 characters. Your other sessions end.").autocomplete("new-password").render(errors))
            div.actions { button type="submit" { "Change password" } }
        }
        h2 { "Sessions" }
        div.card {
            p { "Signing out everywhere ends every console session of yours, in every browser and on every Keyplane node." }
            form method="post" action="/console/account/sign-out-everywhere" {
                (csrf(signed))
                button.danger type="submit" { "Sign out everywhere" }
            }
        }
    }
}

pub async fn account_page(
    State(state): State<AppState>,
    Person(signed): Person,
    Query(query): Query<AccountQuery>,
) -> Response {
    let notice = (query.notice.as_deref() == Some("password"))
        .then_some("Your password was changed. Your other sessions have ended.");
    let body = account_body(&state, &signed, notice, &Errors::default()).await;
    signed_page(&state, &signed, Section::Account, "Account", body)
        .await
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct PasswordForm {
    current_password: Option<String>,
    new_password: Option<String>,
}

pub async fn change_password(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
    Form(form): Form<PasswordForm>,
) -> Response {
    let current = form.current_password.unwrap_or_default();
    let new = form.new_password.unwrap_or_default();
    let errors = if current.is_empty() {
        Errors::field("current_password", "must not be empty")
    } else if current.len() > 512 {
        Errors::field("current_password", "is too long")
    } else {
        match sessions::change_password(&state, &signed, &current, new, &context).await {
            Ok(()) => return layout::see_other("/console/account?notice=password"),
            Err(PasswordChangeError::Invalid(error)) => {
                Errors::field("new_password", error.message)
            }
            Err(PasswordChangeError::Refused(AuthError::InvalidCredentials)) => {
                Errors::field("current_password", "is wrong")
            }
            Err(PasswordChangeError::Refused(AuthError::Throttled(seconds))) => Errors::form(
                format!("Too many failed attempts. Try again in {seconds} seconds."),
            ),
            Err(PasswordChangeError::Refused(AuthError::Busy)) => {
                Errors::form("Keyplane is busy. Try again in a moment.")
            }
            Err(
                PasswordChangeError::Refused(AuthError::Store(error))
                | PasswordChangeError::Store(error),
            ) => {
                tracing::warn!(%error, "changing a password failed");
                return layout::refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Keyplane cannot reach its database just now. Try again in a moment.",
                );
            }
        }
    };
    let body = account_body(&state, &signed, None, &errors).await;
    (
        StatusCode::BAD_REQUEST,
        signed_page(&state, &signed, Section::Account, "Account", body).await,
    )
        .into_response()
}

pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    Person(signed): Person,
    context: RequestContext,
) -> Response {
    if let Err(error) = sessions::sign_out_everywhere(&state, &signed, &context).await {
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
