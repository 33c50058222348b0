//! Refresh tokens: exchanging one for a new pair (single use, with a short grace for a retried
//! exchange and family revocation on any other reuse), finding one by its plain value, whether
//! one is still active, and revoking a family.

use keyplane_core::audit::AuditAction;
use keyplane_core::records::{ActorType, ApiKey, RefreshToken};
use keyplane_core::secrets::{CredentialKind, PlainCredential};
use keyplane_core::standing::Standing;
use keyplane_core::time::now_unix;
use keyplane_store::StoreError;

use crate::service::access::current_standing;
use crate::service::context::{RequestContext, actor_type};
use crate::service::tokens::{AuthError, IssuedTokens, RefreshSpec, Subject, issue, try_issue};
use crate::state::AppState;

/// Exchanges a refresh token for a new pair. Single use: presenting a spent token again revokes
/// its whole family (RFC 9700 §4.14.2).
///
/// With `client` (OAuth 2.0 callers that authenticated), the token must have been issued to that
/// API key; a token of another subject is refused without being spent.
pub async fn refresh(
    state: &AppState,
    presented: &str,
    client: Option<&ApiKey>,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let now = now_unix();
    let Some(token) = find_refresh_token(state, presented).await? else {
        return Err(AuthError::InvalidCredentials);
    };
    if !token.is_live(now) || client.is_some_and(|key| key.id.to_string() != token.subject_id) {
        return Err(AuthError::InvalidCredentials);
    }
    // Judged from the subject as it is now, whatever was cached or raced when the family began.
    let Some((standing, family_expires_at)) = family_standing(state, &token, now).await? else {
        return Err(AuthError::InvalidCredentials);
    };
    // Measured against the clock now: a concurrent spend may be stamped later than `now`.
    let within_grace = |used_at: i64| {
        let grace = state.token_settings().reuse_grace;
        grace > 0 && now_unix() - used_at < grace
    };
    // A client that lost the response to its refresh may retry within the grace window; any
    // other reuse of a spent token revokes its family.
    let retry = match token.used_at {
        Some(used_at) if within_grace(used_at) => true,
        Some(_) => {
            revoke_family_on_reuse(state, &token, context).await?;
            return Err(AuthError::InvalidCredentials);
        }
        None => false,
    };
    let subject = || Subject {
        subject_type: token.subject_type,
        id: token.subject_id.clone(),
        organization_id: token.organization_id,
        env: token.env,
        role: standing.role,
        token_version: standing.token_version,
        key_generation: token.key_generation,
        access_ttl: state.token_settings().access_ttl,
    };
    let refreshed = || {
        vec![context.event(
            token.organization_id,
            AuditAction::TokenRefreshed,
            (actor_type(token.subject_type), &token.subject_id),
            ("refresh_token", &token.family_id),
        )]
    };
    let successor = |spend: bool| RefreshSpec {
        family_id: token.family_id.clone(),
        // The successor is stored in the same transaction that spends this token.
        spend_parent: spend.then(|| token.id.clone()),
        family_expires_at,
    };
    match try_issue(state, subject(), Some(successor(!retry)), refreshed()).await? {
        Some(issued) => Ok(issued),
        None => {
            // Spent concurrently: within the grace window that is a retry, otherwise reuse.
            let spent = state.store().refresh_token(&token.id).await?;
            if spent.and_then(|t| t.used_at).is_some_and(within_grace) {
                issue(state, subject(), Some(successor(false)), refreshed()).await
            } else {
                revoke_family_on_reuse(state, &token, context).await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }
}

/// A stored refresh token by its plain value: looked up by the selector it starts with (its
/// id), then accepted only when the keyed hash of the whole value matches, compared in constant
/// time. A value without a well-formed selector costs no lookup.
pub async fn find_refresh_token(
    state: &AppState,
    presented: &str,
) -> Result<Option<RefreshToken>, StoreError> {
    let Some(id) = PlainCredential::selector_of(presented)
        .and_then(|selector| uuid::Uuid::try_parse(selector).ok())
    else {
        return Ok(None);
    };
    let token = state.store().refresh_token(&id.to_string()).await?;
    Ok(token.filter(|token| {
        state.secrets().verify_credential(
            CredentialKind::RefreshToken,
            presented,
            &token.token_hash,
        )
    }))
}

/// Whether a refresh token could be exchanged now (unspent, unrevoked, unexpired, its family
/// not ended, and its subject still active).
pub async fn refresh_token_is_active(
    state: &AppState,
    token: &RefreshToken,
) -> Result<bool, StoreError> {
    let now = now_unix();
    let unspent = token.is_live(now) && token.used_at.is_none();
    Ok(unspent && family_standing(state, token, now).await?.is_some())
}

/// Whether a refresh token's family may go on at `now`, judged from its subject as it is in the
/// store (see [`Standing::end_for`]), and until when: its own end, or sooner when the API key's
/// secret it was obtained with has been rotated since. `None` when the family may not go on.
async fn family_standing(
    state: &AppState,
    token: &RefreshToken,
    now: i64,
) -> Result<Option<(Standing, Option<i64>)>, StoreError> {
    let Some(standing) = current_standing(
        state.store(),
        token.subject_type,
        &token.subject_id,
        token.organization_id,
    )
    .await?
    else {
        return Ok(None);
    };
    let Some(rotation_end) =
        standing.end_for(token.subject_token_version, token.key_generation, now)
    else {
        return Ok(None);
    };
    let end = match (token.family_expires_at, rotation_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if end.is_some_and(|end| end <= now) {
        return Ok(None);
    }
    Ok(Some((standing, end)))
}

/// Revokes a refresh token's whole family (RFC 7009), recording `token.revoked`.
pub async fn revoke_refresh_token(
    state: &AppState,
    token: &RefreshToken,
    actor: (ActorType, &str),
    context: &RequestContext,
) -> Result<(), StoreError> {
    if token.revoked_at.is_some() {
        return Ok(());
    }
    let event = context.event(
        token.organization_id,
        AuditAction::TokenRevoked,
        actor,
        ("refresh_token", &token.family_id),
    );
    state
        .store()
        .revoke_refresh_family(&token.family_id, now_unix(), &[event])
        .await
}

async fn revoke_family_on_reuse(
    state: &AppState,
    token: &RefreshToken,
    context: &RequestContext,
) -> Result<(), AuthError> {
    tracing::warn!(request_id = ?context.request_id, family = %token.family_id, "refresh token reuse: revoking its family");
    let event = context.event(
        token.organization_id,
        AuditAction::TokenReuseDetected,
        (actor_type(token.subject_type), &token.subject_id),
        ("refresh_token", &token.family_id),
    );
    state
        .store()
        .revoke_refresh_family(&token.family_id, now_unix(), &[event])
        .await?;
    Ok(())
}
