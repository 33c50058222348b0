//! Who a bearer token speaks for, and whether it still may.
//!
//! The signature and lifetime are checked in memory. What can change after a token was issued
//! (its API key disabled, expired or deleted; its user's membership disabled or removed; its
//! organization deleted) is read from the store, through a per-node cache whose entries live
//! [`SUBJECT_STATE_TTL`]. So on every node sharing the database, a token stops working at most
//! that long (plus one query) after the change, while a busy key costs one query per node per
//! TTL instead of one per request. Concurrent misses for one subject share a single query.
//! Changes made through this node also [`Subjects::forget`] the entry, taking effect at once here.

use std::sync::Arc;
use std::time::Duration;

use keyplane_core::OrganizationId;
use keyplane_core::records::{ApiKey, Organization};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType, TokenRejected};
use keyplane_core::values::{ApiKeyStatus, Env, Role, UserStatus};
use keyplane_store::{Store, StoreError};
use moka::future::Cache;

use crate::app::AppState;

/// How stale a node's view of a subject may be. Well under the contract's 1 s.
pub const SUBJECT_STATE_TTL: Duration = Duration::from_millis(500);

/// Most subjects cached per node.
const SUBJECT_CACHE_CAPACITY: u64 = 100_000;

/// The caller behind a verified access token.
#[derive(Clone, Debug)]
pub struct Actor {
    pub subject_type: SubjectType,
    /// The API key's or the user's id.
    pub subject_id: String,
    pub organization_id: OrganizationId,
    pub env: Env,
    /// API keys act as admins of their organization.
    pub role: Role,
    pub claims: AccessClaims,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Malformed, forged, expired, of an unknown key, or of a subject that may no longer act.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
}

type SubjectKey = (SubjectType, String, OrganizationId);

/// The per-node cache of subject states.
pub struct Subjects {
    cache: Cache<SubjectKey, Option<Role>>,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(SUBJECT_CACHE_CAPACITY)
                .time_to_live(SUBJECT_STATE_TTL)
                .build(),
        }
    }
}

impl Subjects {
    /// Drops what this node knows about a subject, after changing it.
    pub async fn forget(
        &self,
        subject_type: SubjectType,
        subject_id: &str,
        organization_id: OrganizationId,
    ) {
        self.cache
            .invalidate(&(subject_type, subject_id.to_owned(), organization_id))
            .await;
    }
}

/// Whether an API key may act now (enabled, not expired).
pub fn key_is_usable(key: &ApiKey, now: i64) -> bool {
    key.status == ApiKeyStatus::Enabled && key.expires_at.is_none_or(|at| at > now)
}

/// The role a subject holds in `organization_id` now, straight from the store; `None` when it
/// may not act there (any more).
pub async fn current_role(
    store: &dyn Store,
    subject_type: SubjectType,
    subject_id: &str,
    organization_id: OrganizationId,
) -> Result<Option<Role>, StoreError> {
    match subject_type {
        SubjectType::ApiKey => {
            let Ok(id) = subject_id.parse() else {
                return Ok(None);
            };
            Ok(store.api_key(id).await?.and_then(|key| {
                (key.organization_id == organization_id && key_is_usable(&key, now_unix()))
                    .then_some(Role::Admin)
            }))
        }
        SubjectType::User => {
            let Ok(id) = subject_id.parse() else {
                return Ok(None);
            };
            Ok(store
                .membership(organization_id, id)
                .await?
                .and_then(|m| (m.status == UserStatus::Active).then_some(m.role)))
        }
    }
}

/// Verifies an access token and resolves its caller.
pub async fn verify_access_token(state: &AppState, token: &str) -> Result<Actor, AccessError> {
    let claims = match state.signing_keys().current().verify(token) {
        Err(TokenRejected::UnknownKey)
            if state
                .signing_keys()
                .reload_for_unknown_kid(state.store(), state.secrets())
                .await =>
        {
            state.signing_keys().current().verify(token)
        }
        other => other,
    }
    .map_err(|rejected| {
        tracing::debug!(%rejected, "access token rejected");
        AccessError::Invalid("signature, key or lifetime")
    })?;
    let organization_id: OrganizationId = claims
        .organization
        .parse()
        .map_err(|_| AccessError::Invalid("organization"))?;
    let key: SubjectKey = (claims.subject_type, claims.sub.clone(), organization_id);
    let store = state.store();
    let role = state
        .subjects()
        .cache
        .try_get_with(key, async {
            current_role(store, claims.subject_type, &claims.sub, organization_id).await
        })
        .await
        .map_err(AccessError::Store)?
        .ok_or(AccessError::Invalid("subject disabled or gone"))?;
    Ok(Actor {
        subject_type: claims.subject_type,
        subject_id: claims.sub.clone(),
        organization_id,
        env: claims.env,
        role,
        claims,
    })
}

/// `organization_id` when a caller of `actor_organization` may see it: its own organization or
/// one it manages, transitively; `None` for anything else, existing or not. One read for the
/// caller's own organization, one more per level of management above the target.
pub async fn visible_organization(
    store: &dyn Store,
    actor_organization: OrganizationId,
    organization_id: OrganizationId,
) -> Result<Option<Organization>, StoreError> {
    /// Deeper hierarchies than this are refused rather than walked.
    const MAX_DEPTH: usize = 64;
    let Some(target) = store.organization(organization_id).await? else {
        return Ok(None);
    };
    let (mut current, mut manager) = (target.id, target.managed_by);
    for _ in 0..MAX_DEPTH {
        if current == actor_organization {
            return Ok(Some(target));
        }
        let Some(next) = manager else { return Ok(None) };
        current = next;
        manager = match store.organization(next).await? {
            Some(organization) => organization.managed_by,
            None => return Ok(None),
        };
    }
    Ok(None)
}
