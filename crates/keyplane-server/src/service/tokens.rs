//! Minting: the signed access token and, with a family, the stored refresh token, written with
//! the audit events of the sign-in or refresh that issued them.

use keyplane_core::OrganizationId;
use keyplane_core::records::{AuditEvent, RefreshIssue, RefreshToken};
use keyplane_core::secrets::{CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType};
use keyplane_core::values::{Env, Role};
use keyplane_store::StoreError;

use crate::state::AppState;

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
    /// Too many failures; retry after this many seconds.
    #[error("too many failed attempts")]
    Throttled(u64),
    /// The password pool is saturated.
    #[error("busy")]
    Busy,

    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a refresh token goes: its family, the token it replaces (spent in the same
/// transaction), and the family's hard end.
pub(crate) struct RefreshSpec {
    pub(crate) family_id: String,
    pub(crate) spend_parent: Option<String>,
    pub(crate) family_expires_at: Option<i64>,
}

impl RefreshSpec {
    pub(crate) fn new_family(family_expires_at: Option<i64>) -> Self {
        Self {
            family_id: uuid::Uuid::now_v7().to_string(),
            spend_parent: None,
            family_expires_at,
        }
    }
}

pub(crate) struct Subject {
    pub(crate) subject_type: SubjectType,
    pub(crate) id: String,
    pub(crate) organization_id: OrganizationId,
    pub(crate) env: Env,
    pub(crate) role: Role,
    pub(crate) token_version: i64,
    /// For an API key: the generation of the secret presented.
    pub(crate) key_generation: Option<i64>,
    /// How long the access token lives, in seconds.
    pub(crate) access_ttl: i64,
}

/// Mints the access token and, with a family, stores a new refresh token with `events`.
pub(crate) async fn issue(
    state: &AppState,
    subject: Subject,
    refresh: Option<RefreshSpec>,
    events: Vec<AuditEvent>,
) -> Result<IssuedTokens, AuthError> {
    // Only a spent parent refuses, and only `refresh` spends one.
    try_issue(state, subject, refresh, events)
        .await?
        .ok_or(AuthError::InvalidCredentials)
}

/// Mints the access token and, with a refresh spec, stores the refresh token with `events`;
/// `None` when the parent it replaces was spent concurrently.
pub(crate) async fn try_issue(
    state: &AppState,
    subject: Subject,
    refresh: Option<RefreshSpec>,
    events: Vec<AuditEvent>,
) -> Result<Option<IssuedTokens>, AuthError> {
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
        exp: now + subject.access_ttl,
        jti: uuid::Uuid::now_v7().simple().to_string(),
        role: Some(subject.role),
        token_version: subject.token_version,
        key_generation: subject.key_generation,
    };
    let access_token = keys.sign(&claims);
    let refresh_token = match refresh {
        Some(spec) => {
            let id = uuid::Uuid::now_v7();
            let plain = PlainCredential::with_selector(&id.simple().to_string());
            let mut expires_at = now + state.token_settings().refresh_ttl;
            if let Some(end) = spec.family_expires_at {
                expires_at = expires_at.min(end);
            }
            let record = RefreshToken {
                id: id.to_string(),
                family_id: spec.family_id,
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
                family_expires_at: spec.family_expires_at,
                key_generation: subject.key_generation,
                subject_token_version: subject.token_version,
            };
            let issue = RefreshIssue {
                token: record,
                spend_parent: spec.spend_parent,
                events,
            };
            if !state.refresh_tokens().issue(issue).await? {
                return Ok(None);
            }
            Some((plain, expires_at))
        }
        None => {
            // No refresh token, so no change to write them with: like failures, they go to the
            // batched writer instead of costing each token request a transaction.
            for event in events {
                state.audit_queue().record(event);
            }
            None
        }
    };
    Ok(Some(IssuedTokens {
        access_token,
        claims,
        refresh_token,
    }))
}
