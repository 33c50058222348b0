//! Idempotency-Key (contract §12): around any write that carries one, [`begin`] claims the
//! caller's key (or finds its kept answer) and [`finish`] keeps the answer, or releases the
//! claim when the answer is not kept so that a retry runs again. The rules (which answers are
//! kept, how records are keyed and encrypted) are the domain's
//! ([`keyplane_core::idempotency`]); the atomic claim is the store's.

use std::time::Duration;

use keyplane_core::idempotency::{
    ClaimOutcome, IdempotencyClaim, IdempotencyKey, KeptAnswer, RecordKeys, is_kept,
};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::SubjectType;
use keyplane_store::StoreError;

use crate::service::access::Actor;
use crate::state::AppState;

/// How often each node deletes expired records.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Records deleted per statement by the purge, so it never holds the database for long.
const PURGE_BATCH: i64 = 1_000;

/// Whose records a bearer token's requests use: the API key, or the person, never the
/// organization, so no one else can receive a kept answer. A person acts in one organization
/// per token and the by-name routes (`/api/v0/api-keys/{name}`, `/api/v0/users`) mean that
/// organization, so a person's records are also kept apart per organization; an API key
/// belongs to one.
pub fn caller_of(actor: &Actor) -> String {
    match actor.subject_type {
        SubjectType::ApiKey => format!("api_key:{}", actor.subject_id),
        SubjectType::User => format!("user:{}@{}", actor.subject_id, actor.organization_id),
    }
}

/// The caller of an invitation accept, which has no bearer token: whoever holds the
/// invitation's token ([`keyplane_core::idempotency::invitation_caller`]).
pub fn caller_of_invitation(state: &AppState, token: &str) -> String {
    keyplane_core::idempotency::invitation_caller(state.secrets(), token)
}

/// What a request with an idempotency key does.
#[derive(Debug)]
pub enum Begun {
    /// The work is this request's: do it, then [`finish`].
    Run(Box<Claimed>),
    /// The same request was answered: answer this again, without doing the work.
    Replay(Replay),
    /// The same request is still running.
    InProgress,
    /// The key was used with another method, path or body.
    Mismatch,
}

/// A claim on a key, held while the work runs.
#[derive(Debug)]
pub struct Claimed {
    claim: IdempotencyClaim,
    keys: RecordKeys,
}

/// A kept answer, decrypted.
#[derive(Debug)]
pub struct Replay {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Claims `key` of `caller` for the request `method target` with `body` (its exact bytes).
pub async fn begin(
    state: &AppState,
    caller: String,
    key: &IdempotencyKey,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<Begun, StoreError> {
    let keys = RecordKeys::derive(state.secrets(), &caller, key);
    let request_hash = keys.request_hash(method, target, body);
    let claim = IdempotencyClaim::new(
        caller,
        &keys,
        request_hash,
        now_unix(),
        state.idempotency_ttl(),
    );
    Ok(match state.store().claim_idempotency_key(&claim).await? {
        ClaimOutcome::Claimed => Begun::Run(Box::new(Claimed { claim, keys })),
        ClaimOutcome::InProgress => Begun::InProgress,
        ClaimOutcome::Mismatch => Begun::Mismatch,
        ClaimOutcome::Completed(answer) => {
            let content_type = answer.content_type;
            let body = keys
                .open(answer.status, content_type.as_deref(), &answer.sealed_body)
                .ok_or_else(|| StoreError::Corrupt("a kept answer does not open".into()))?;
            Begun::Replay(Replay {
                status: answer.status,
                content_type,
                body,
            })
        }
    })
}

/// Ends the work of `claimed` with its answer: kept (encrypted) when the domain keeps answers of
/// its status, else the claim is released so that a retry runs again. A failure here is logged,
/// not answered: the work is done and the client gets its answer; the claim then stays until
/// its lease ends (a retry meanwhile is told the request is in progress).
pub async fn finish(
    state: &AppState,
    claimed: Box<Claimed>,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) {
    if !is_kept(status) {
        return release(state, claimed).await;
    }
    let answer = KeptAnswer {
        status,
        content_type: content_type.map(str::to_owned),
        sealed_body: claimed.keys.seal(status, content_type, body),
    };
    let expires_at = now_unix() + state.idempotency_ttl();
    match state
        .store()
        .complete_idempotency_key(&claimed.claim, &answer, expires_at)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!("an idempotency claim was taken over before its answer"),
        Err(error) => tracing::warn!(%error, "keeping an idempotent answer failed"),
    }
}

/// Renews the lease of a claim whose work still runs (every
/// [`keyplane_core::idempotency::RENEW_SECONDS`]), so that no retry takes it over meanwhile.
pub async fn renew(state: &AppState, claimed: &Claimed) {
    match state
        .store()
        .renew_idempotency_key(&claimed.claim, now_unix())
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!("an idempotency claim was taken over while its work ran"),
        Err(error) => tracing::warn!(%error, "renewing an idempotency claim failed"),
    }
}

/// Gives a claim up without an answer (the work failed or was not done): a retry runs again.
pub async fn release(state: &AppState, claimed: Box<Claimed>) {
    if let Err(error) = state.store().release_idempotency_key(&claimed.claim).await {
        tracing::warn!(%error, "releasing an idempotency claim failed");
    }
}

/// Deletes every record expired now, in batches; how many.
pub async fn purge_expired(state: &AppState) -> Result<u64, StoreError> {
    let now = now_unix();
    let mut total = 0;
    loop {
        let deleted = state
            .store()
            .purge_idempotency_keys(now, PURGE_BATCH)
            .await?;
        total += deleted;
        if deleted < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Every [`PURGE_INTERVAL`], deletes expired records. Runs until the server stops; on several
/// nodes each purges (the deletes are idempotent). Reads ignore expired records anyway.
pub async fn purge_periodically(state: AppState) {
    let mut ticks = tokio::time::interval(PURGE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match purge_expired(&state).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged expired idempotency records"),
            Err(error) => tracing::warn!(%error, "purging idempotency records failed"),
        }
    }
}
