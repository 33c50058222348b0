//! The signing keys this node uses, loaded from the store (shared by every node) and decrypted
//! with the master key. The first node to start on an empty store creates the first key.

use std::sync::Arc;

use keyplane_core::secrets::ServerSecrets;
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{SigningKey, TokenKeys};
use keyplane_store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] keyplane_core::tokens::SigningKeyError),
}

/// The key set loaded at start. Rotation (not built yet) will swap it whole.
pub struct SigningKeys {
    current: Arc<TokenKeys>,
}

impl SigningKeys {
    pub async fn load(
        store: &dyn Store,
        secrets: &ServerSecrets,
        issuer: String,
    ) -> Result<Self, SigningError> {
        let keys = match Self::read(store, secrets, &issuer).await? {
            Some(keys) => keys,
            None => {
                store
                    .insert_signing_key(&SigningKey::generate(now_unix()).seal(secrets))
                    .await?;
                // Another node may have created one at the same moment: both are published,
                // the newest signs.
                Self::read(store, secrets, &issuer)
                    .await?
                    .expect("a key was just stored")
            }
        };
        Ok(Self {
            current: Arc::new(keys),
        })
    }

    async fn read(
        store: &dyn Store,
        secrets: &ServerSecrets,
        issuer: &str,
    ) -> Result<Option<TokenKeys>, SigningError> {
        let keys = store
            .signing_keys()
            .await?
            .iter()
            .map(|stored| SigningKey::open(stored, secrets))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenKeys::new(issuer.to_owned(), &keys))
    }

    pub fn current(&self) -> Arc<TokenKeys> {
        self.current.clone()
    }
}
