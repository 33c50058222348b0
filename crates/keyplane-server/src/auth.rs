//! Turning credentials into tokens: API key and secret, or a refresh token. The one place that
//! decides whether a credential is good, mints the pair, and records the outcome.
//!
//! The secret check is HMAC-SHA-256 under the pepper with a constant-time comparison; an unknown
//! key is checked against a dummy hash so that it costs the same as a wrong secret.

use std::net::IpAddr;

use keyplane_core::records::{ActorType, ApiKey, AuditEvent, RefreshToken};
use keyplane_core::secrets::{CredentialHash, CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType};
use keyplane_core::values::{ApiKeyStatus, Env};
use keyplane_core::{AuditEventId, OrganizationId};
use keyplane_store::StoreError;

use crate::app::AppState;

/// A freshly minted token pair; shown once.
pub struct IssuedTokens {
    pub access_token: String,
    pub claims: AccessClaims,
    /// `None` where the protocol has no refresh token (Fiskil).
    pub refresh_token: Option<(PlainCredential, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong, unknown, disabled, expired or deleted: callers cannot tell which.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a request came from, for the audit log.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
}

impl RequestContext {
    fn event(
        &self,
        organization_id: OrganizationId,
        action: &str,
        actor: (ActorType, &str),
        target: (&str, &str),
    ) -> AuditEvent {
        AuditEvent {
            id: AuditEventId::new(),
            organization_id,
            action: action.to_owned(),
            actor_type: actor.0,
            actor_id: Some(actor.1.to_owned()),
            target_type: target.0.to_owned(),
            target_id: target.1.to_owned(),
            request_id: self.request_id.clone(),
            ip: self.ip.map(|ip| ip.to_string()),
            created_at: now_unix(),
        }
    }
}

/// Whether a key may obtain tokens now, and whether `secret` is its current secret (or its
/// previous one within a rotation's grace period).
fn key_accepts(state: &AppState, key: &ApiKey, secret: &str, now: i64) -> bool {
    let secrets = state.secrets();
    let current = secrets.verify_credential(CredentialKind::ApiSecret, secret, &key.secret_hash);
    let previous = match (&key.previous_secret_hash, key.previous_secret_expires_at) {
        (Some(hash), Some(until)) if until > now => {
            secrets.verify_credential(CredentialKind::ApiSecret, secret, hash)
        }
        _ => false,
    };
    (current || previous) && key_is_usable(key, now)
}

fn key_is_usable(key: &ApiKey, now: i64) -> bool {
    key.status == ApiKeyStatus::Enabled && key.expires_at.is_none_or(|at| at > now)
}

/// Verifies an API key and secret. `with_refresh` says whether to issue (and store) a refresh
/// token: Fiskil's endpoint has none, so it never writes.
pub async fn authenticate_api_key(
    state: &AppState,
    public_key: &str,
    secret: &str,
    with_refresh: bool,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let now = now_unix();
    let Some(key) = state.store().api_key_by_public_key(public_key).await? else {
        // Same work as for a known key: one keyed hash and a constant-time comparison.
        let dummy = CredentialHash([0u8; 32]);
        let _ = state
            .secrets()
            .verify_credential(CredentialKind::ApiSecret, secret, &dummy);
        tracing::info!(request_id = ?context.request_id, "authentication failed: unknown API key");
        return Err(AuthError::InvalidCredentials);
    };
    let key_id = key.id.to_string();
    if !key_accepts(state, &key, secret, now) {
        let event = context.event(
            key.organization_id,
            "auth.failed",
            (ActorType::ApiKey, &key_id),
            ("api_key", &key_id),
        );
        state.store().record_audit_events(&[event]).await?;
        return Err(AuthError::InvalidCredentials);
    }
    let succeeded = context.event(
        key.organization_id,
        "auth.succeeded",
        (ActorType::ApiKey, &key_id),
        ("api_key", &key_id),
    );
    issue(
        state,
        Subject {
            subject_type: SubjectType::ApiKey,
            id: key_id.clone(),
            organization_id: key.organization_id,
            env: key.kind.env(),
        },
        with_refresh.then(|| uuid::Uuid::now_v7().to_string()),
        vec![succeeded],
    )
    .await
}

/// Exchanges a refresh token for a new pair. Single use: presenting a spent token again revokes
/// its whole family (RFC 9700 §4.14.2).
pub async fn refresh(
    state: &AppState,
    presented: &str,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let now = now_unix();
    let hash = state
        .secrets()
        .hash_credential(CredentialKind::RefreshToken, presented);
    let Some(token) = state.store().refresh_token_by_hash(&hash).await? else {
        return Err(AuthError::InvalidCredentials);
    };
    if token.revoked_at.is_some() || token.expires_at <= now {
        return Err(AuthError::InvalidCredentials);
    }
    if token.used_at.is_some() || !state.store().spend_refresh_token(&token.id, now).await? {
        revoke_family_on_reuse(state, &token, context).await?;
        return Err(AuthError::InvalidCredentials);
    }
    if !subject_is_active(state, &token, now).await? {
        return Err(AuthError::InvalidCredentials);
    }
    let refreshed = context.event(
        token.organization_id,
        "token.refreshed",
        (actor_type(token.subject_type), &token.subject_id),
        ("refresh_token", &token.family_id),
    );
    issue(
        state,
        Subject {
            subject_type: token.subject_type,
            id: token.subject_id.clone(),
            organization_id: token.organization_id,
            env: token.env,
        },
        Some(token.family_id.clone()),
        vec![refreshed],
    )
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
        "token.reuse_detected",
        (actor_type(token.subject_type), &token.subject_id),
        ("refresh_token", &token.family_id),
    );
    state
        .store()
        .revoke_refresh_family(&token.family_id, now_unix(), &[event])
        .await?;
    Ok(())
}

async fn subject_is_active(
    state: &AppState,
    token: &RefreshToken,
    now: i64,
) -> Result<bool, AuthError> {
    match token.subject_type {
        SubjectType::ApiKey => {
            let Ok(id) = token.subject_id.parse() else {
                return Ok(false);
            };
            Ok(state
                .store()
                .api_key(id)
                .await?
                .is_some_and(|key| key_is_usable(&key, now)))
        }
        // People log in once the users issue lands; until then no user token exists.
        SubjectType::User => Ok(false),
    }
}

fn actor_type(subject: SubjectType) -> ActorType {
    match subject {
        SubjectType::ApiKey => ActorType::ApiKey,
        SubjectType::User => ActorType::User,
    }
}

struct Subject {
    subject_type: SubjectType,
    id: String,
    organization_id: OrganizationId,
    env: Env,
}

/// Mints the access token and, with a family, stores a new refresh token with `events`.
async fn issue(
    state: &AppState,
    subject: Subject,
    refresh_family: Option<String>,
    events: Vec<AuditEvent>,
) -> Result<IssuedTokens, AuthError> {
    let now = now_unix();
    let keys = state.signing_keys().current();
    let claims = AccessClaims {
        iss: keys.issuer().to_owned(),
        sub: subject.id.clone(),
        organization: subject.organization_id.to_string(),
        env: subject.env,
        subject_type: subject.subject_type,
        iat: now,
        nbf: now,
        exp: now + state.token_settings().access_ttl,
        jti: uuid::Uuid::now_v7().simple().to_string(),
    };
    let access_token = keys.sign(&claims);
    let refresh_token = match refresh_family {
        Some(family_id) => {
            let plain = PlainCredential::generate();
            let expires_at = now + state.token_settings().refresh_ttl;
            let record = RefreshToken {
                id: uuid::Uuid::now_v7().to_string(),
                family_id,
                token_hash: state
                    .secrets()
                    .hash_credential(CredentialKind::RefreshToken, plain.expose()),
                subject_type: subject.subject_type,
                subject_id: subject.id,
                organization_id: subject.organization_id,
                env: subject.env,
                created_at: now,
                expires_at,
                used_at: None,
                revoked_at: None,
            };
            state.store().issue_refresh_token(&record, &events).await?;
            Some((plain, expires_at))
        }
        None => {
            state.store().record_audit_events(&events).await?;
            None
        }
    };
    Ok(IssuedTokens {
        access_token,
        claims,
        refresh_token,
    })
}
