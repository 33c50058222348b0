//! The per-node caches of who may act: subject standings, API keys by public key, verified
//! access tokens and organizations, each kept at most [`SUBJECT_STATE_TTL`] (verified tokens
//! [`VERIFIED_TOKEN_TTL`]) and dropped at once by the node that changes them. What they mean is
//! decided in [`crate::service::access`]; this module only keeps them.

use std::sync::Arc;
use std::time::Duration;

use keyplane_core::OrganizationId;
use keyplane_core::records::{ApiKey, Organization};
use keyplane_core::standing::Standing;
use keyplane_core::tokens::{AccessClaims, SubjectType};
use keyplane_store::{Store, StoreError};
use moka::future::Cache;

/// How stale a node's view of a subject may be. Well under the documented 1 s.
pub const SUBJECT_STATE_TTL: Duration = Duration::from_millis(500);

/// Most subjects cached per node.
const SUBJECT_CACHE_CAPACITY: u64 = 100_000;

/// Most verified access tokens remembered per node, and for how long at most.
const VERIFIED_TOKEN_CAPACITY: u64 = 20_000;
const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(60);

pub type SubjectKey = (SubjectType, String, OrganizationId);

/// The per-node caches: subject states, API keys by public key (what a token request checks
/// its secret against) and organizations, each kept [`SUBJECT_STATE_TTL`] and dropped at once
/// by the node that changes them; and the access tokens this node has verified.
pub struct Subjects {
    pub(crate) cache: Cache<SubjectKey, Option<Standing>>,
    /// Unknown keys are cached too (as `None`), so an unknown key costs what a known one does.
    api_keys: Cache<String, Option<Arc<ApiKey>>>,
    /// Claims of access tokens whose signature, algorithm and issuer this node has checked, by
    /// SHA-256 of the whole token: a client presenting its token again skips the Ed25519
    /// verification (about 35 µs, most of what a management request costs). Lifetimes are
    /// checked on every use. A signing key stays published until every token it signed has
    /// expired, so no cached token outlives its key.
    pub(crate) verified: Cache<[u8; 32], Arc<AccessClaims>>,
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
    pub(crate) async fn organization(
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
