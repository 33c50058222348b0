//! The `refresh_tokens` table: refresh tokens by family, looked up by the selector their plain
//! value starts with and checked by hash. Each token can be spent once: spending a parent and
//! storing its successor commit together, so of concurrent presentations of one token exactly
//! one succeeds (within a batch too), whoever sees the parent spent also sees the successor,
//! and a family revocation reaches it. Batches of logins and refreshes commit as one
//! transaction (a group commit: one disk flush for many).

use keyplane_core::UserId;
use keyplane_core::records::{AuditEvent, RefreshIssue, RefreshToken};
use keyplane_core::tokens::SubjectType;

use crate::StoreError;
use crate::audit::{ROWS_PER_INSERT, insert_audit_events};
use crate::engine::{Backend, SqlConnection, begin, commit, query};
use crate::rows::Bind;

async fn insert_refresh_tokens<C: SqlConnection>(
    conn: &mut C,
    tokens: &[&RefreshToken],
) -> Result<(), StoreError> {
    for chunk in tokens.chunks(ROWS_PER_INSERT) {
        let mut insert = query(
            "INSERT INTO refresh_tokens (id, family_id, token_hash, subject_type, \
             subject_id, organization_id, env, created_at, expires_at, used_at, \
             revoked_at, family_expires_at, key_generation, subject_token_version) ",
        );
        insert.push_values::<C, _>(chunk, |row, token| {
            row.bind(&token.id)
                .bind(&token.family_id)
                .bind(token.token_hash.as_bytes())
                .bind(token.subject_type.as_str())
                .bind(&token.subject_id)
                .bind(token.organization_id.to_string())
                .bind(token.env.as_str())
                .bind(token.created_at)
                .bind(token.expires_at)
                .bind(token.used_at)
                .bind(token.revoked_at)
                .bind(token.family_expires_at)
                .bind(token.key_generation)
                .bind(token.subject_token_version);
        });
        insert.execute(conn).await?;
    }
    Ok(())
}

/// Stores new refresh tokens with the audit events of the logins and refreshes that issued
/// them, in one transaction, spending parents first: false at an issue's index (nothing of it
/// stored) when its parent was already used or revoked.
pub(crate) async fn issue_refresh_tokens(
    store: &impl Backend,
    batch: &[RefreshIssue],
) -> Result<Vec<bool>, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    // Spending a parent and storing its successor commit together: whoever sees the parent
    // spent also sees the successor, and a family revocation reaches it.
    // Parents are spent in id order, so batches of two nodes cannot deadlock.
    let mut stored = vec![true; batch.len()];
    let mut spending: Vec<(usize, &str)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, issue)| issue.spend_parent.as_deref().map(|p| (i, p)))
        .collect();
    spending.sort_by_key(|&(_, parent)| parent);
    for (index, parent) in spending {
        let spent = query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(batch[index].token.created_at)
        .bind(parent)
        .execute(&mut *tx)
        .await?;
        stored[index] = spent == 1;
    }
    let issued = || batch.iter().zip(&stored).filter(|(_, kept)| **kept);
    let tokens: Vec<&RefreshToken> = issued().map(|(issue, _)| &issue.token).collect();
    insert_refresh_tokens(&mut *tx, &tokens).await?;
    insert_audit_events(&mut *tx, issued().flat_map(|(issue, _)| &issue.events)).await?;
    commit(tx).await?;
    Ok(stored)
}

/// A refresh token by its id, the selector its plain value starts with.
pub(crate) async fn refresh_token(
    store: &impl Backend,
    id: &str,
) -> Result<Option<RefreshToken>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM refresh_tokens WHERE id = $1",
            &[Bind::Text(id)],
        )
        .await
}

/// Revokes every refresh token a person obtained (in any organization), as of `now`: their
/// password changed, so what the old one obtained ends. Inside the caller's transaction.
pub(crate) async fn revoke_refresh_tokens_of_user<C: SqlConnection>(
    conn: &mut C,
    user_id: UserId,
    now: i64,
) -> Result<(), StoreError> {
    query(
        "UPDATE refresh_tokens SET revoked_at = $1 \
         WHERE subject_type = $2 AND subject_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(SubjectType::User.as_str())
    .bind(user_id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every token of a family (reuse detected, logout), with its audit events.
pub(crate) async fn revoke_refresh_family(
    store: &impl Backend,
    family_id: &str,
    now: i64,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    query(
        "UPDATE refresh_tokens SET revoked_at = $1 \
         WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family_id)
    .execute(&mut *tx)
    .await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}
