//! Who a bearer token speaks for, and whether it still may.
//!
//! The signature and lifetime are checked in memory. What can change after a token was issued
//! (its API key disabled, expired or deleted; its user's membership disabled or removed; its
//! organization deleted) is read from the store, through a per-node cache whose entries live
//! [`SUBJECT_STATE_TTL`] ([`crate::infra::subjects`]). So on every node sharing the database, a token stops working at most
//! that long (plus one query) after the change, while a busy key costs one query per node per
//! TTL instead of one per request. Concurrent misses for one subject share a single query.
//! Changes made through this node also [`Subjects::forget`] the entry, taking effect at once here.

use std::sync::Arc;

use keyplane_core::api_keys::SecretState;
use keyplane_core::policy::{self, Action};
use keyplane_core::records::{ApiKey, Membership, Organization};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType, TokenRejected};
use keyplane_core::values::{Env, Role};
use keyplane_core::{OrganizationId, UserId};
use keyplane_store::{Store, StoreError};

use keyplane_core::standing::Standing;

pub use crate::infra::subjects::SUBJECT_STATE_TTL;
use crate::infra::subjects::SubjectKey;
use crate::state::AppState;

/// The caller behind a verified access token.
#[derive(Clone, Debug)]
pub struct Actor {
    pub subject_type: SubjectType,
    /// The API key's or the user's id.
    pub subject_id: String,
    pub organization_id: OrganizationId,
    pub env: Env,
    /// A person's role in the organization, or an API key's own role.
    pub role: Role,
    pub claims: AccessClaims,
}

impl Actor {
    /// The person acting, when a person acts; `None` for an API key.
    pub fn user_id(&self) -> Option<UserId> {
        match self.subject_type {
            SubjectType::User => self.subject_id.parse().ok(),
            SubjectType::ApiKey => None,
        }
    }

    /// Whether the caller's role allows `action`, by the one policy table
    /// ([`keyplane_core::policy`]).
    pub fn require(&self, action: Action) -> Result<(), Forbidden> {
        if policy::allows(self.role, action) {
            Ok(())
        } else {
            Err(Forbidden)
        }
    }
}

/// The person credited with what the caller creates (`created_by_user`): the person acting, or
/// for an API key the person credited with that key (so credit passes down from the person who
/// made the first key).
pub async fn credited_user(state: &AppState, actor: &Actor) -> Result<Option<UserId>, StoreError> {
    match actor.subject_type {
        SubjectType::User => Ok(actor.user_id()),
        SubjectType::ApiKey => match actor.subject_id.parse() {
            Ok(id) => Ok(state
                .store()
                .api_key(id)
                .await?
                .and_then(|key| key.created_by_user)),
            Err(_) => Ok(None),
        },
    }
}

/// The caller's role does not allow what it asked.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the caller's role does not allow this")]
pub struct Forbidden;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Malformed, forged, expired, of an unknown key, or of a subject that may no longer act.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
}

/// The standing of a subject in `organization_id` now, straight from the store; `None` when it
/// may not act there (any more).
pub async fn current_standing(
    store: &dyn Store,
    subject_type: SubjectType,
    subject_id: &str,
    organization_id: OrganizationId,
) -> Result<Option<Standing>, StoreError> {
    match subject_type {
        SubjectType::ApiKey => {
            let Ok(id) = subject_id.parse() else {
                return Ok(None);
            };
            Ok(store
                .api_key(id)
                .await?
                .filter(|key| key.organization_id == organization_id)
                .and_then(|key| key_standing(&key, now_unix())))
        }
        SubjectType::User => {
            let Ok(id) = subject_id.parse() else {
                return Ok(None);
            };
            Ok(store
                .membership(organization_id, id)
                .await?
                .filter(Membership::may_act)
                .map(|m| Standing {
                    role: m.role,
                    token_version: m.token_version,
                    secret: None,
                }))
        }
    }
}

/// A key's standing, when it may act at `now`.
fn key_standing(key: &ApiKey, now: i64) -> Option<Standing> {
    key.is_usable(now).then_some(Standing {
        role: key.role,
        token_version: key.token_version,
        secret: Some(SecretState::of(key)),
    })
}

/// Verifies an access token and resolves its caller.
pub async fn verify_access_token(state: &AppState, token: &str) -> Result<Actor, AccessError> {
    let digest = token_digest(token);
    let verified = &state.subjects().verified;
    let claims = match verified.get(&digest).await {
        Some(claims) if claims.is_current(now_unix()) => AccessClaims::clone(&claims),
        Some(_) => return Err(AccessError::Invalid("signature, key or lifetime")),
        None => {
            let claims = verify_signature(state, token).await?;
            verified.insert(digest, Arc::new(claims.clone())).await;
            claims
        }
    };
    resolve(state, claims).await
}

/// The caller behind claims whose signature and lifetime were checked (an access token's, or
/// those a console session stands for): the one place that decides, through the subjects cache,
/// whether the subject may still act and with which role.
pub async fn resolve(state: &AppState, claims: AccessClaims) -> Result<Actor, AccessError> {
    let organization_id: OrganizationId = claims
        .organization
        .parse()
        .map_err(|_| AccessError::Invalid("organization"))?;
    let key: SubjectKey = (claims.subject_type, claims.sub.clone(), organization_id);
    let store = state.store();
    let standing = state
        .subjects()
        .cache
        .try_get_with(key, async {
            current_standing(store, claims.subject_type, &claims.sub, organization_id).await
        })
        .await
        .map_err(AccessError::Store)?
        .ok_or(AccessError::Invalid("subject disabled or gone"))?;
    if standing
        .end_for(claims.token_version, claims.key_generation, now_unix())
        .is_none()
    {
        return Err(AccessError::Invalid(
            "issued before a disable or with a rotated secret",
        ));
    }
    Ok(Actor {
        subject_type: claims.subject_type,
        subject_id: claims.sub.clone(),
        organization_id,
        env: claims.env,
        role: standing.role,
        claims,
    })
}

fn token_digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest
        .as_ref()
        .try_into()
        .expect("SHA-256 digests are 32 bytes")
}

/// Signature, algorithm, issuer and lifetime, with one reload of the signing keys when the
/// token names a key this node does not know yet.
async fn verify_signature(state: &AppState, token: &str) -> Result<AccessClaims, AccessError> {
    match state.signing_keys().current().verify(token) {
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
    })
}

/// `organization_id` when a caller of `actor_organization` may see it: its own organization or
/// one it manages, transitively; `None` for anything else, existing or not. One read for the
/// caller's own organization, one more per level of management above the target.
pub async fn visible_organization(
    state: &AppState,
    actor_organization: OrganizationId,
    organization_id: OrganizationId,
) -> Result<Option<Organization>, StoreError> {
    const MAX_DEPTH: usize = keyplane_core::organizations::MAX_MANAGEMENT_LEVELS;
    let (subjects, store) = (state.subjects(), state.store());
    let Some(target) = subjects.organization(store, organization_id).await? else {
        return Ok(None);
    };
    let (mut current, mut manager) = (target.id, target.managed_by);
    for _ in 0..MAX_DEPTH {
        if current == actor_organization {
            return Ok(Some(Organization::clone(&target)));
        }
        let Some(next) = manager else { return Ok(None) };
        current = next;
        manager = match subjects.organization(store, next).await? {
            Some(organization) => organization.managed_by,
            None => return Ok(None),
        };
    }
    Ok(None)
}

/// How many organizations the management chain of `organization_id` holds, itself included (a
/// root organization is 1); `None` when it is gone or the chain is longer than
/// [`keyplane_core::organizations::MAX_MANAGEMENT_LEVELS`].
pub async fn management_levels(
    state: &AppState,
    organization_id: OrganizationId,
) -> Result<Option<usize>, StoreError> {
    let (subjects, store) = (state.subjects(), state.store());
    let mut next = Some(organization_id);
    for level in 0..=keyplane_core::organizations::MAX_MANAGEMENT_LEVELS {
        let Some(id) = next else {
            return Ok(Some(level));
        };
        let Some(organization) = subjects.organization(store, id).await? else {
            return Ok(None);
        };
        next = organization.managed_by;
    }
    Ok(None)
}
