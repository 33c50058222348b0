//! The first organization (`keyplane bootstrap`) and the store's health checks. A bootstrap
//! writes the organization, its owner, the owner's invitation, a first API key and their audit
//! events in one transaction, and happens once: it is refused when any organization exists,
//! and the singleton row of the `bootstrap` table makes a concurrent second one fail on commit.
//! The write probe rewrites the one row of `readiness_probe` and commits, so readiness means a
//! write would be stored now.

use crate::audit::insert_audit_events;
use crate::engine::{Backend, begin, commit, query};
use crate::{Bootstrap, StoreError};

/// Succeeds when the database answers.
pub(crate) async fn ping(store: &impl Backend) -> Result<(), StoreError> {
    query("SELECT 1").execute(&mut *store.read().await?).await?;
    Ok(())
}

/// Succeeds when the database stores a write: one row rewritten and committed. A failure is
/// reported to the store (SQLite reopens its writer before the next write).
pub(crate) async fn probe_write(store: &impl Backend, now: i64) -> Result<(), StoreError> {
    store.check_storage()?;
    let probe = async {
        let mut writer = store.write().await?;
        let mut tx = begin(&mut *writer).await?;
        query("UPDATE readiness_probe SET checked_at = $1 WHERE id = 1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        commit(tx).await
    };
    let result = probe.await;
    if result.is_err() {
        store.write_probe_failed();
    }
    result
}

/// Whether the store holds any organization (after bootstrap, it always does).
pub(crate) async fn has_organizations(store: &impl Backend) -> Result<bool, StoreError> {
    let mut reader = store.read().await?;
    // COUNT is BIGINT on both engines; the inner LIMIT stops at the first row.
    let found: i64 =
        query("SELECT COUNT(*) FROM (SELECT 1 FROM organizations LIMIT 1) AS any_organization")
            .fetch_scalar(&mut *reader)
            .await?;
    Ok(found > 0)
}

/// Creates the first organization with everything that comes with it, once.
pub(crate) async fn bootstrap(store: &impl Backend, b: &Bootstrap) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let organizations: i64 = query("SELECT COUNT(*) FROM organizations")
        .fetch_scalar(&mut *tx)
        .await?;
    if organizations > 0 {
        return Err(StoreError::AlreadyBootstrapped);
    }
    // The singleton row makes a concurrent second bootstrap fail on commit.
    match query("INSERT INTO bootstrap (id, done_at) VALUES (1, $1)")
        .bind(b.organization.created_at)
        .execute(&mut *tx)
        .await
    {
        Err(StoreError::Conflict(_)) => return Err(StoreError::AlreadyBootstrapped),
        other => other?,
    };
    crate::organizations::insert_organization(&mut *tx, &b.organization).await?;
    crate::people::insert_user(&mut *tx, &b.user).await?;
    crate::people::insert_membership(&mut *tx, &b.membership).await?;
    crate::invitations::insert_invitation(&mut *tx, &b.invitation).await?;
    crate::api_keys::insert_api_key(&mut *tx, &b.api_key).await?;
    insert_audit_events(&mut *tx, &b.events).await?;
    match commit(tx).await {
        Err(StoreError::Conflict(_)) => Err(StoreError::AlreadyBootstrapped),
        other => other,
    }
}
