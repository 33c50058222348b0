//! The `signing_keys` table: the keys that sign access tokens, their private halves encrypted.
//! The newest key signs; older ones are retired (`retired_at`) and stay published until their
//! last token expires. A rotation stores the new key and retires the others in one
//! transaction, and only while the newest key is still the one the rotating node saw: a node
//! that finds another's key newer changes nothing.

use keyplane_core::tokens::StoredSigningKey;

use crate::StoreError;
use crate::engine::{Backend, SqlConnection, begin, commit, query};

async fn insert(conn: &mut impl SqlConnection, key: &StoredSigningKey) -> Result<(), StoreError> {
    query(
        "INSERT INTO signing_keys (kid, encrypted_private_key, public_key, created_at, \
         retired_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key.kid)
    .bind(&key.encrypted_private_key)
    .bind(&key.public_key)
    .bind(key.created_at)
    .bind(key.retired_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every stored signing key, oldest first.
pub(crate) async fn signing_keys(
    store: &impl Backend,
) -> Result<Vec<StoredSigningKey>, StoreError> {
    query("SELECT * FROM signing_keys ORDER BY created_at, kid")
        .fetch_records(&mut *store.read().await?)
        .await
}

pub(crate) async fn insert_signing_key(
    store: &impl Backend,
    key: &StoredSigningKey,
) -> Result<(), StoreError> {
    insert(&mut *store.write().await?, key).await
}

/// Stores `new` and retires every other unretired key at `retire_at`, while `expected_newest`
/// is still the newest key. False, changing nothing, when another node rotated first.
pub(crate) async fn rotate_signing_key(
    store: &impl Backend,
    new: &StoredSigningKey,
    retire_at: i64,
    expected_newest: Option<&str>,
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let newest: Option<String> =
        query("SELECT kid FROM signing_keys ORDER BY created_at DESC, kid DESC LIMIT 1")
            .fetch_optional_scalar(&mut *tx)
            .await?;
    if newest.as_deref() != expected_newest {
        return Ok(false);
    }
    query(
        "UPDATE signing_keys SET retired_at = $1 \
         WHERE retired_at IS NULL OR retired_at > $2",
    )
    .bind(retire_at)
    .bind(retire_at)
    .execute(&mut *tx)
    .await?;
    insert(&mut *tx, new).await?;
    commit(tx).await?;
    Ok(true)
}
