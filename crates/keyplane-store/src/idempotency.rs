//! The `idempotency_keys` table: one record per caller and keyed hash of an `Idempotency-Key`
//! (see [`keyplane_core::idempotency`]). A request claims the record with one
//! `INSERT … ON CONFLICT DO NOTHING`: on one node or many sharing PostgreSQL, of concurrent
//! requests with one key exactly one inserts it and does the work. The others read the record:
//! another request's fingerprint (a mismatch), still running, or the kept answer. An expired
//! record, or a claim left running past its lease by a node that stopped, is taken over with an
//! `UPDATE` conditioned on the claim it replaces, so of two requests taking it over one wins.
//! Completing and releasing are conditioned on the claim's own id: a request whose stale claim
//! was taken over changes nothing.

use keyplane_core::idempotency::{ClaimOutcome, IdempotencyClaim, KeptAnswer};

use crate::StoreError;
use crate::engine::{Backend, query};
use crate::rows::Columns;

/// Rounds of insert-or-read before giving up as "in progress": each lost round means another
/// request claimed, released or took over the record in between.
const CLAIM_ROUNDS: usize = 4;

pub(crate) async fn claim_idempotency_key(
    store: &impl Backend,
    claim: &IdempotencyClaim,
) -> Result<ClaimOutcome, StoreError> {
    let mut conn = store.write().await?;
    for _ in 0..CLAIM_ROUNDS {
        let inserted = query(
            "INSERT INTO idempotency_keys (caller, key_hash, request_hash, claim_id, state, \
             claimed_at, expires_at) VALUES ($1, $2, $3, $4, 'running', $5, $6) \
             ON CONFLICT (caller, key_hash) DO NOTHING",
        )
        .bind(claim.caller.as_str())
        .bind(&claim.key_hash[..])
        .bind(&claim.request_hash[..])
        .bind(claim.claim_id.as_str())
        .bind(claim.now)
        .bind(claim.expires_at)
        .execute(&mut *conn)
        .await?;
        if inserted == 1 {
            return Ok(ClaimOutcome::Claimed);
        }
        let Some(row) = query(
            "SELECT request_hash, claim_id, state, claimed_at, expires_at, status, \
             content_type, sealed_body FROM idempotency_keys WHERE caller = $1 AND key_hash = $2",
        )
        .bind(claim.caller.as_str())
        .bind(&claim.key_hash[..])
        .fetch_optional(&mut *conn)
        .await?
        else {
            // Released (or purged) since the insert: try again.
            continue;
        };
        let state: String = row.get("state")?;
        let claimed_at: i64 = row.get("claimed_at")?;
        let expires_at: i64 = row.get("expires_at")?;
        let running = match state.as_str() {
            "running" => true,
            "complete" => false,
            other => return Err(StoreError::Corrupt(format!("state: {other:?}"))),
        };
        if expires_at <= claim.now || (running && claimed_at <= claim.stale_before) {
            let previous: String = row.get("claim_id")?;
            let taken = query(
                "UPDATE idempotency_keys SET request_hash = $1, claim_id = $2, \
                 state = 'running', claimed_at = $3, expires_at = $4, status = NULL, \
                 content_type = NULL, sealed_body = NULL \
                 WHERE caller = $5 AND key_hash = $6 AND claim_id = $7",
            )
            .bind(&claim.request_hash[..])
            .bind(claim.claim_id.as_str())
            .bind(claim.now)
            .bind(claim.expires_at)
            .bind(claim.caller.as_str())
            .bind(&claim.key_hash[..])
            .bind(previous)
            .execute(&mut *conn)
            .await?;
            if taken == 1 {
                return Ok(ClaimOutcome::Claimed);
            }
            continue;
        }
        let request_hash: Vec<u8> = row.get("request_hash")?;
        if request_hash != claim.request_hash {
            return Ok(ClaimOutcome::Mismatch);
        }
        if running {
            return Ok(ClaimOutcome::InProgress);
        }
        let status: i64 = row.get("status")?;
        let sealed_body: Vec<u8> = row.get("sealed_body")?;
        return Ok(ClaimOutcome::Completed(KeptAnswer {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("status: {status}")))?,
            content_type: row.get("content_type")?,
            sealed_body,
        }));
    }
    Ok(ClaimOutcome::InProgress)
}

/// Keeps `answer` on the record `claim` holds, until `expires_at`. False when the claim is no
/// longer the record's (it went stale and was taken over).
pub(crate) async fn complete_idempotency_key(
    store: &impl Backend,
    claim: &IdempotencyClaim,
    answer: &KeptAnswer,
    expires_at: i64,
) -> Result<bool, StoreError> {
    let changed = query(
        "UPDATE idempotency_keys SET state = 'complete', status = $1, content_type = $2, \
         sealed_body = $3, expires_at = $4 \
         WHERE caller = $5 AND key_hash = $6 AND claim_id = $7 AND state = 'running'",
    )
    .bind(i64::from(answer.status))
    .bind(answer.content_type.as_deref())
    .bind(&answer.sealed_body)
    .bind(expires_at)
    .bind(claim.caller.as_str())
    .bind(&claim.key_hash[..])
    .bind(claim.claim_id.as_str())
    .execute(&mut *store.write().await?)
    .await?;
    Ok(changed == 1)
}

/// Renews the lease of the running record `claim` holds (its request is still working). False
/// when the claim is no longer the record's.
pub(crate) async fn renew_idempotency_key(
    store: &impl Backend,
    claim: &IdempotencyClaim,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = query(
        "UPDATE idempotency_keys SET claimed_at = $1 \
         WHERE caller = $2 AND key_hash = $3 AND claim_id = $4 AND state = 'running'",
    )
    .bind(now)
    .bind(claim.caller.as_str())
    .bind(&claim.key_hash[..])
    .bind(claim.claim_id.as_str())
    .execute(&mut *store.write().await?)
    .await?;
    Ok(changed == 1)
}

/// Deletes the record `claim` holds while it is still running: the answer is not kept, so a
/// retry runs again.
pub(crate) async fn release_idempotency_key(
    store: &impl Backend,
    claim: &IdempotencyClaim,
) -> Result<(), StoreError> {
    query(
        "DELETE FROM idempotency_keys \
         WHERE caller = $1 AND key_hash = $2 AND claim_id = $3 AND state = 'running'",
    )
    .bind(claim.caller.as_str())
    .bind(&claim.key_hash[..])
    .bind(claim.claim_id.as_str())
    .execute(&mut *store.write().await?)
    .await?;
    Ok(())
}

/// Deletes up to `limit` records expired at `now`; how many it deleted. The expiry is checked
/// again by the delete itself, so a record taken over meanwhile stays.
pub(crate) async fn purge_idempotency_keys(
    store: &impl Backend,
    now: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    query(
        "DELETE FROM idempotency_keys WHERE expires_at <= $1 AND (caller, key_hash) IN \
         (SELECT caller, key_hash FROM idempotency_keys WHERE expires_at <= $2 LIMIT $3)",
    )
    .bind(now)
    .bind(now)
    .bind(limit)
    .execute(&mut *store.write().await?)
    .await
}
