//! Forgotten passwords: a reset link mailed on request, with the same answer for every address,
//! and a new password set with it, which ends every console session of the person and signs them
//! in again. The link's token is stored as its keyed hash, works once, for an hour
//! ([`PasswordReset::LIFETIME`]); a person gets at most one link a minute however often (and
//! from wherever) it is asked for, and each request counts against the asking address's
//! throttle like a failed sign-in, so an address cannot send a flood of mail.

use std::time::Instant;

use keyplane_core::ValidationError;
use keyplane_core::audit::AuditAction;
use keyplane_core::records::{ActorType, Membership, PasswordReset};
use keyplane_core::secrets::{CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::values::Email;
use keyplane_store::StoreError;

use crate::infra::throttle::Verdict;
use crate::service::context::RequestContext;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Unknown, used, replaced or expired.
    #[error("the reset link is invalid, already used or expired")]
    InvalidLink,
    #[error("too many requests")]
    Throttled(u64),
    #[error("busy")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The link a reset mail carries: the token in the fragment, which browsers never send to a
/// server, so it reaches no access log.
pub fn reset_url(public_url: &str, token: &PlainCredential) -> String {
    format!(
        "{}/reset-password#token={}",
        public_url.trim_end_matches('/'),
        token.expose()
    )
}

/// Asks for a reset link for `email`. Answers alike, at once, for known and unknown addresses:
/// the lookup and the mail happen after the answer.
pub async fn request(
    state: &AppState,
    email: &str,
    context: &RequestContext,
) -> Result<(), ResetError> {
    let email = Email::parse(email)?;
    let throttles = state.throttles();
    match throttles.check_address(context.ip, Instant::now()) {
        Verdict::Allow => {}
        Verdict::Delay(delay) => tokio::time::sleep(delay).await,
        Verdict::Refuse { retry_after } => {
            return Err(ResetError::Throttled(retry_after.as_secs().max(1)));
        }
    }
    throttles.record_address_failure(context.ip, Instant::now());
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(error) = offer(&state, email.as_str()).await {
            tracing::warn!(%error, "a password reset could not be offered");
        }
    });
    Ok(())
}

/// Stores and mails a link, when the address is a person's with a password (someone still
/// invited accepts their invitation instead) and they got none in the last minute.
async fn offer(state: &AppState, email: &str) -> Result<(), StoreError> {
    let Some(user) = state.store().user_by_email(email).await? else {
        return Ok(());
    };
    if user.password_hash.is_none() {
        return Ok(());
    }
    let token = PlainCredential::generate();
    let now = now_unix();
    let reset = PasswordReset {
        token_hash: state
            .secrets()
            .hash_credential(CredentialKind::PasswordReset, token.expose()),
        user_id: user.id,
        created_at: now,
        expires_at: now + PasswordReset::LIFETIME,
    };
    if !state
        .store()
        .offer_password_reset(&reset, now - PasswordReset::MIN_INTERVAL)
        .await?
    {
        return Ok(());
    }
    let body = format!(
        "Someone asked to reset the password of your Keyplane account.\n\n\
         Set a new password here (the link works once, for {} minutes):\n\n{}\n\n\
         If it was not you, ignore this mail: your password stays as it is.\n",
        PasswordReset::LIFETIME / 60,
        reset_url(state.public_url(), &token),
    );
    if let Err(error) = state
        .mailer()
        .send(user.email.as_str(), "Reset your Keyplane password", body)
        .await
    {
        tracing::error!(%error, user = %user.id, "sending a password reset failed");
    }
    Ok(())
}

/// Sets a new password with a reset link's token; every console session of the person ends in
/// the same transaction. The membership to sign them in to (their oldest active one), if any.
pub async fn reset(
    state: &AppState,
    context: &RequestContext,
    token: &str,
    password: String,
) -> Result<Option<Membership>, ResetError> {
    keyplane_core::values::check_password(&password)?;
    let hash = state
        .secrets()
        .hash_credential(CredentialKind::PasswordReset, token);
    let now = now_unix();
    let reset = state
        .store()
        .password_reset(&hash)
        .await?
        .filter(|reset| reset.expires_at > now)
        .ok_or(ResetError::InvalidLink)?;
    let password_hash = state
        .passwords()
        .hash(password)
        .await
        .map_err(|_| ResetError::Busy)?;
    let mut memberships = state.store().memberships_of_user(reset.user_id).await?;
    let user_id = reset.user_id.to_string();
    // Every organization the person is in sees it in its audit log.
    let events: Vec<_> = memberships
        .iter()
        .map(|m| {
            context.event(
                m.organization_id,
                AuditAction::PasswordReset,
                (ActorType::User, &user_id),
                ("user", &user_id),
            )
        })
        .collect();
    if !state
        .store()
        .redeem_password_reset(&hash, reset.user_id, now, &password_hash, &events)
        .await?
    {
        return Err(ResetError::InvalidLink);
    }
    memberships.retain(Membership::may_act);
    memberships.sort_by_key(|m| (m.created_at, m.organization_id.to_string()));
    Ok(memberships.into_iter().next())
}
