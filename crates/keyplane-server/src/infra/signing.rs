//! The signing keys this node uses, loaded from the store (shared by every node) and decrypted
//! with the master key. The first node to start on an empty store creates the first key.
//!
//! Rotation without broken tokens, across nodes:
//! - `rotate` stores a new key and marks the others retired [`KEY_PROPAGATION_SECONDS`] later;
//! - every node reloads the key set every [`RELOAD_INTERVAL`] (shorter than the propagation
//!   delay), and at once, at most once a second, when it meets a token with an unknown `kid`;
//! - so each node publishes a new key before any node signs with it, and keeps publishing a
//!   retired one until the last token it signed has expired ([`TokenKeys::new`] decides both).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use keyplane_core::secrets::ServerSecrets;
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{KEY_PROPAGATION_SECONDS, SigningKey, TokenKeys};
use keyplane_store::{Store, StoreError};

/// How often every node rereads the key set.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(KEY_PROPAGATION_SECONDS as u64 / 2);

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] keyplane_core::tokens::SigningKeyError),
    #[error("no signing key is usable")]
    NoKey,
}

/// The key set in force, swapped whole on reload; readers never wait.
pub struct SigningKeys {
    issuer: String,
    access_ttl: i64,
    current: ArcSwap<TokenKeys>,
    /// Unix second of the last reload triggered by an unknown `kid`.
    last_forced_reload: AtomicI64,
}

impl SigningKeys {
    pub async fn load(
        store: &dyn Store,
        secrets: &ServerSecrets,
        issuer: String,
        access_ttl: i64,
    ) -> Result<Self, SigningError> {
        let keys = match read(store, secrets, &issuer, access_ttl).await {
            Ok(keys) => keys,
            Err(SigningError::NoKey) => {
                store
                    .insert_signing_key(&SigningKey::generate(now_unix()).seal(secrets))
                    .await?;
                // Another node may have created one at the same moment: both are published,
                // the newest signs.
                read(store, secrets, &issuer, access_ttl).await?
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            issuer,
            access_ttl,
            current: ArcSwap::from_pointee(keys),
            last_forced_reload: AtomicI64::new(0),
        })
    }

    pub fn current(&self) -> Arc<TokenKeys> {
        self.current.load_full()
    }

    /// Rereads the key set from the store.
    pub async fn reload(
        &self,
        store: &dyn Store,
        secrets: &ServerSecrets,
    ) -> Result<(), SigningError> {
        let keys = read(store, secrets, &self.issuer, self.access_ttl).await?;
        self.current.store(Arc::new(keys));
        Ok(())
    }

    /// Reloads when `kid` is unknown here, at most once a second per node, so that a token signed
    /// by a key another node just created is accepted, and a flood of made-up kids costs nothing.
    pub async fn reload_for_unknown_kid(&self, store: &dyn Store, secrets: &ServerSecrets) -> bool {
        let now = now_unix();
        let last = self.last_forced_reload.load(Ordering::Relaxed);
        if last >= now
            || self
                .last_forced_reload
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        match self.reload(store, secrets).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "reloading signing keys failed");
                false
            }
        }
    }

    /// Rotates when the newest key is older than `interval` seconds. Returns the new kid.
    pub async fn rotate_if_due(
        &self,
        store: &dyn Store,
        secrets: &ServerSecrets,
        interval: i64,
    ) -> Result<Option<String>, SigningError> {
        let stored = store.signing_keys().await?;
        let Some(newest) = stored.iter().max_by_key(|k| (k.created_at, k.kid.clone())) else {
            return Ok(None);
        };
        if newest.created_at + interval > now_unix() {
            return Ok(None);
        }
        rotate(store, secrets).await
    }
}

/// Creates a new signing key (the first one, on an empty store) and retires the others once it
/// has propagated. Returns the new kid, or `None` when another node rotated at the same moment
/// (its key is as good).
pub async fn rotate(
    store: &dyn Store,
    secrets: &ServerSecrets,
) -> Result<Option<String>, SigningError> {
    let stored = store.signing_keys().await?;
    let newest = stored
        .iter()
        .max_by_key(|k| (k.created_at, k.kid.clone()))
        .map(|k| k.kid.clone());
    let now = now_unix();
    let key = SigningKey::generate(now);
    let rotated = store
        .rotate_signing_key(
            &key.seal(secrets),
            now + KEY_PROPAGATION_SECONDS,
            newest.as_deref(),
        )
        .await?;
    Ok(rotated.then(|| key.kid.clone()))
}

async fn read(
    store: &dyn Store,
    secrets: &ServerSecrets,
    issuer: &str,
    access_ttl: i64,
) -> Result<TokenKeys, SigningError> {
    let keys = store
        .signing_keys()
        .await?
        .iter()
        .map(|stored| SigningKey::open(stored, secrets))
        .collect::<Result<Vec<_>, _>>()?;
    TokenKeys::new(issuer.to_owned(), &keys, now_unix(), access_ttl).ok_or(SigningError::NoKey)
}
