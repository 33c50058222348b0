//! The `console_sessions` table: web console sessions under the keyed hash of their id. A
//! session is read on every console request (a point read by primary key), written when it
//! begins, at most once a minute while it is used (`last_seen_at`), and deleted when it ends.
//! And `password_resets`: the mailed links that set a new password and end every session.

use keyplane_core::OrganizationId;
use keyplane_core::UserId;
use keyplane_core::records::{AuditEvent, ConsoleSession, PasswordReset};
use keyplane_core::secrets::CredentialHash;

use crate::StoreError;
use crate::audit::insert_audit_events;
use crate::engine::{Backend, SqlConnection, begin, commit, query};
use crate::refresh_tokens::revoke_refresh_tokens_of_user;
use crate::rows::Bind;

/// Stores a new session with the audit events of the sign-in, and in the same transaction
/// deletes the sessions (anyone's) that ended by either limit: seen before `idle_before` or
/// begun before `begun_before`.
pub(crate) async fn create_console_session(
    store: &impl Backend,
    session: &ConsoleSession,
    (idle_before, begun_before): (i64, i64),
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    query("DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2")
        .bind(idle_before)
        .bind(begun_before)
        .execute(&mut *tx)
        .await?;
    query(
        "INSERT INTO console_sessions (id_hash, user_id, organization_id, token_version, \
         csrf_token, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(session.id_hash.as_bytes())
    .bind(session.user_id.to_string())
    .bind(session.organization_id.to_string())
    .bind(session.token_version)
    .bind(&session.csrf_token)
    .bind(session.created_at)
    .bind(session.last_seen_at)
    .execute(&mut *tx)
    .await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}

/// A session by the keyed hash of its id.
pub(crate) async fn console_session(
    store: &impl Backend,
    id_hash: &CredentialHash,
) -> Result<Option<ConsoleSession>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM console_sessions WHERE id_hash = $1",
            &[Bind::Bytes(id_hash.as_bytes())],
        )
        .await
}

/// Records that a session was seen at `now` (never moving the time backwards).
pub(crate) async fn touch_console_session(
    store: &impl Backend,
    id_hash: &CredentialHash,
    now: i64,
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    query("UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2 AND last_seen_at < $3")
        .bind(now)
        .bind(id_hash.as_bytes())
        .bind(now)
        .execute(&mut *writer)
        .await?;
    Ok(())
}

/// Points a session at another organization (the switcher), with the token version of the
/// person's membership there. False when the session is gone.
pub(crate) async fn switch_console_session(
    store: &impl Backend,
    id_hash: &CredentialHash,
    organization_id: OrganizationId,
    token_version: i64,
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let changed = query(
        "UPDATE console_sessions SET organization_id = $1, token_version = $2 WHERE id_hash = $3",
    )
    .bind(organization_id.to_string())
    .bind(token_version)
    .bind(id_hash.as_bytes())
    .execute(&mut *writer)
    .await?;
    Ok(changed == 1)
}

/// Ends one session (sign out), writing `events` in the same transaction when it ended here.
/// False (nothing written) when it had ended already.
pub(crate) async fn delete_console_session(
    store: &impl Backend,
    id_hash: &CredentialHash,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let deleted = query("DELETE FROM console_sessions WHERE id_hash = $1")
        .bind(id_hash.as_bytes())
        .execute(&mut *tx)
        .await?;
    if deleted == 1 {
        insert_audit_events(&mut *tx, events).await?;
    }
    commit(tx).await?;
    Ok(deleted == 1)
}

/// Ends every session of a person (sign out everywhere, a password change), with its audit
/// events; how many there were.
pub(crate) async fn delete_console_sessions_of_user(
    store: &impl Backend,
    user_id: UserId,
    events: &[AuditEvent],
) -> Result<u64, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let deleted = query("DELETE FROM console_sessions WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(deleted)
}

/// Stores a person's reset link, replacing their earlier one, unless that one was made after
/// `not_since` (one statement, so concurrent requests store one link). False when refused.
pub(crate) async fn offer_password_reset(
    store: &impl Backend,
    reset: &PasswordReset,
    not_since: i64,
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let stored = query(
        "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at, used_at) \
         VALUES ($1, $2, $3, $4, NULL) \
         ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, \
         created_at = excluded.created_at, expires_at = excluded.expires_at, used_at = NULL \
         WHERE password_resets.created_at <= $5",
    )
    .bind(reset.token_hash.as_bytes())
    .bind(reset.user_id.to_string())
    .bind(reset.created_at)
    .bind(reset.expires_at)
    .bind(not_since)
    .execute(&mut *writer)
    .await?;
    Ok(stored == 1)
}

/// An unused reset link by the keyed hash of its token (expired or not).
pub(crate) async fn password_reset(
    store: &impl Backend,
    token_hash: &CredentialHash,
) -> Result<Option<PasswordReset>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM password_resets WHERE token_hash = $1 AND used_at IS NULL",
            &[Bind::Bytes(token_hash.as_bytes())],
        )
        .await
}

/// Spends a reset link (unused, of `user_id`, not expired at `now`) and in the same transaction
/// sets the person's password hash, ends all their console sessions, revokes their refresh
/// tokens and writes `events`. False (nothing changed) when the link was spent, replaced or expired meanwhile.
pub(crate) async fn redeem_password_reset(
    store: &impl Backend,
    token_hash: &CredentialHash,
    user_id: UserId,
    now: i64,
    password_hash: &str,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let spent = query(
        "UPDATE password_resets SET used_at = $1 \
         WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL AND expires_at > $4",
    )
    .bind(now)
    .bind(token_hash.as_bytes())
    .bind(user_id.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if spent != 1 {
        return Ok(false);
    }
    set_password(&mut *tx, user_id, password_hash, None, now).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(true)
}

/// What setting a password does, whichever way it is set (a reset link, `Change password`):
/// stores the new hash, ends every console session of the person but `keep`, and revokes every
/// refresh token of theirs (as a disable ends them), so whoever held the old password keeps
/// nothing it gave them.
async fn set_password<C: SqlConnection>(
    conn: &mut C,
    user_id: UserId,
    password_hash: &str,
    keep: Option<&CredentialHash>,
    now: i64,
) -> Result<(), StoreError> {
    let user = user_id.to_string();
    query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .bind(&user)
        .execute(&mut *conn)
        .await?;
    match keep {
        Some(keep) => {
            query("DELETE FROM console_sessions WHERE user_id = $1 AND id_hash <> $2")
                .bind(&user)
                .bind(keep.as_bytes())
                .execute(&mut *conn)
                .await?
        }
        None => {
            query("DELETE FROM console_sessions WHERE user_id = $1")
                .bind(&user)
                .execute(&mut *conn)
                .await?
        }
    };
    revoke_refresh_tokens_of_user(conn, user_id, now).await
}

/// Sets a person's password hash, ends their console sessions but `keep` (the one that
/// changed it) and revokes their refresh tokens, with `events`, in one transaction.
pub(crate) async fn change_password(
    store: &impl Backend,
    user_id: UserId,
    password_hash: &str,
    keep: &CredentialHash,
    now: i64,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    set_password(&mut *tx, user_id, password_hash, Some(keep), now).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}
