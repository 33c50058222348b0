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
use keyplane_core::api_keys::SecretState;
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

/// Most verified access tokens remembered per node, and for how long at most.
const VERIFIED_TOKEN_CAPACITY: u64 = 20_000;
const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(60);

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

/// What a subject may do now: its role, and the version of its tokens (tokens issued under
/// another version are dead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub token_version: i64,
    /// For an API key: which of its secrets still count.
    pub secret: Option<SecretState>,
}

impl Standing {
    /// When what was issued to this subject under `token_version`, with the API key secret of
    /// `key_generation`, ends at the latest: `Some(None)` never of itself, `Some(Some(end))` with
    /// the grace of the rotation that replaced that secret; `None` when it has ended (issued
    /// before a disable or to an earlier membership, or with a secret rotated away).
    pub fn end_for(
        &self,
        token_version: i64,
        key_generation: Option<i64>,
        now: i64,
    ) -> Option<Option<i64>> {
        if token_version != self.token_version {
            return None;
        }
        let end = match (self.secret, key_generation) {
            (Some(secret), Some(generation)) => secret.end_of(generation)?,
            _ => None,
        };
        match end {
            Some(end) if end <= now => None,
            end => Some(end),
        }
    }
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

/// The per-node caches: subject states, API keys by public key (what a token request checks
/// its secret against) and organizations, each kept [`SUBJECT_STATE_TTL`] and dropped at once
/// by the node that changes them; and the access tokens this node has verified.
pub struct Subjects {
    cache: Cache<SubjectKey, Option<Standing>>,
    /// Unknown keys are cached too (as `None`), so an unknown key costs what a known one does.
    api_keys: Cache<String, Option<Arc<ApiKey>>>,
    /// Claims of access tokens whose signature, algorithm and issuer this node has checked, by
    /// SHA-256 of the whole token: a client presenting its token again skips the Ed25519
    /// verification (about 35 µs, most of what a management request costs). Lifetimes are
    /// checked on every use. A signing key stays published until every token it signed has
    /// expired, so no cached token outlives its key.
    verified: Cache<[u8; 32], Arc<AccessClaims>>,
    /// Organizations by id, for the visibility walk every management request makes.
    organizations: Cache<OrganizationId, Arc<Organization>>,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(SUBJECT_CACHE_CAPACITY)
                .time_to_live(SUBJECT_STATE_TTL)
                .support_invalidation_closures()
                .build(),
            api_keys: Cache::builder()
                .max_capacity(SUBJECT_CACHE_CAPACITY)
                .time_to_live(SUBJECT_STATE_TTL)
                .support_invalidation_closures()
                .build(),
            verified: Cache::builder()
                .max_capacity(VERIFIED_TOKEN_CAPACITY)
                .time_to_live(VERIFIED_TOKEN_TTL)
                .build(),
            organizations: Cache::builder()
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

    /// Drops what this node knows about an API key (its state and its secrets), after changing,
    /// rotating or deleting it.
    pub async fn forget_key(&self, key: &ApiKey) {
        self.forget(
            SubjectType::ApiKey,
            &key.id.to_string(),
            key.organization_id,
        )
        .await;
        self.api_keys.invalidate(&key.public_key).await;
    }

    /// Drops what this node knows about an organization, after changing it.
    pub async fn forget_organization(&self, organization_id: OrganizationId) {
        self.organizations.invalidate(&organization_id).await;
    }

    /// An organization, at most [`SUBJECT_STATE_TTL`] old; absent ones are not cached.
    /// Concurrent misses share one query.
    async fn organization(
        &self,
        store: &dyn Store,
        id: OrganizationId,
    ) -> Result<Option<Arc<Organization>>, StoreError> {
        // `Err(None)`: there is no such organization (nothing is cached).
        let found = self
            .organizations
            .try_get_with(id, async {
                match store.organization(id).await {
                    Ok(Some(organization)) => Ok(Arc::new(organization)),
                    Ok(None) => Err(None),
                    Err(error) => Err(Some(error)),
                }
            })
            .await;
        match found {
            Ok(organization) => Ok(Some(organization)),
            Err(error) => match &*error {
                None => Ok(None),
                Some(error) => Err(error.for_each_caller()),
            },
        }
    }

    /// Drops every cached API key and subject of a deleted organization, so that their tokens
    /// stop at once on this node.
    pub fn forget_keys_of(&self, organization_id: OrganizationId) {
        let of_organization = move |(_, _, organization): &SubjectKey, _: &Option<Standing>| {
            *organization == organization_id
        };
        if let Err(error) = self.cache.invalidate_entries_if(of_organization) {
            tracing::error!(%error, "could not drop the cached subjects of a deleted organization");
            self.cache.invalidate_all();
        }
        let predicate = move |_: &String, key: &Option<Arc<ApiKey>>| {
            key.as_ref()
                .is_some_and(|key| key.organization_id == organization_id)
        };
        if let Err(error) = self.api_keys.invalidate_entries_if(predicate) {
            tracing::error!(%error, "could not drop the cached keys of a deleted organization");
            self.api_keys.invalidate_all();
        }
    }

    /// The API key with this public key, at most [`SUBJECT_STATE_TTL`] old. Concurrent misses
    /// share one query.
    pub async fn api_key_by_public_key(
        &self,
        store: &dyn Store,
        public_key: &str,
    ) -> Result<Option<Arc<ApiKey>>, StoreError> {
        self.api_keys
            .try_get_with_by_ref(public_key, async {
                Ok(store.api_key_by_public_key(public_key).await?.map(Arc::new))
            })
            .await
            .map_err(|error: Arc<StoreError>| error.for_each_caller())
    }
}

/// Whether an API key may act now (enabled, not expired).
pub fn key_is_usable(key: &ApiKey, now: i64) -> bool {
    key.status == ApiKeyStatus::Enabled && key.expires_at.is_none_or(|at| at > now)
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
                .filter(|m| m.status == UserStatus::Active)
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
    key_is_usable(key, now).then_some(Standing {
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
