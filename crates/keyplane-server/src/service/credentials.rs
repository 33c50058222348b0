//! Turning credentials into tokens: API key and secret, email and password, or a refresh token.
//! The one place that decides whether a credential is good, mints the pair, and records the
//! outcome.
//!
//! - The secret check is HMAC-SHA-256 under the pepper with a constant-time comparison; an
//!   unknown key is checked against a dummy hash so that it costs the same as a wrong secret, and
//!   failure events go to the background [`crate::infra::audit_queue::AuditQueue`], so neither waits for a
//!   write.
//! - Passwords are Argon2id, on the bounded pool of [`crate::infra::passwords`].
//! - Failures are throttled per client address and per credential ([`crate::infra::throttle`]). A
//!   throttled address is refused before any lookup. A throttled API key still has its secret
//!   checked: a right secret succeeds, so a flood of wrong ones cannot lock its owner out, and
//!   guessing a 256-bit secret is hopeless anyway. A throttled account is refused before its
//!   password is checked, because passwords can be guessed; the refusal ends when the failures
//!   drain, as `Retry-After` says.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyplane_core::records::{ActorType, ApiKey, AuditEvent, RefreshIssue, RefreshToken};
use keyplane_core::secrets::{CredentialHash, CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType};
use keyplane_core::values::{Env, Role, UserStatus};
use keyplane_core::{AuditEventId, OrganizationId};
use keyplane_store::StoreError;

use keyplane_core::standing::Standing;

use crate::infra::throttle::{Verdict, client_unit};
use crate::service::access::current_standing;
use crate::state::AppState;

/// A freshly minted token pair; shown once.
pub struct IssuedTokens {
    pub access_token: String,
    pub claims: AccessClaims,
    /// `None` where the protocol has no refresh token (Fiskil).
    pub refresh_token: Option<(PlainCredential, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong, unknown, disabled, expired or deleted: callers cannot tell which.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failures; retry after this many seconds.
    #[error("too many failed attempts")]
    Throttled(u64),
    /// The password pool is saturated.
    #[error("busy")]
    Busy,

    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a request came from, for the audit log.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
}

impl RequestContext {
    /// An audit event of this request: the one place events get their request id, address and
    /// time.
    pub fn event(
        &self,
        organization_id: OrganizationId,
        action: &str,
        actor: (ActorType, &str),
        target: (&str, &str),
    ) -> AuditEvent {
        AuditEvent {
            id: AuditEventId::new(),
            organization_id,
            action: action.to_owned(),
            actor_type: actor.0,
            actor_id: Some(actor.1.to_owned()),
            target_type: target.0.to_owned(),
            target_id: target.1.to_owned(),
            request_id: self.request_id.clone(),
            ip: self.ip.map(|ip| ip.to_string()),
            created_at: now_unix(),
        }
    }

    /// An audit event of this request by an authenticated caller.
    pub fn event_by(
        &self,
        actor: &crate::service::access::Actor,
        organization_id: OrganizationId,
        action: &str,
        target: (&str, &str),
    ) -> AuditEvent {
        self.event(
            organization_id,
            action,
            (actor_type(actor.subject_type), &actor.subject_id),
            target,
        )
    }
}

/// Whether a key may obtain tokens now with `secret`: `Some(None)` for its current secret,
/// `Some(Some(until))` for its previous one within a rotation's grace period (what it obtains
/// ends then), `None` otherwise. Both hashes are always compared.
fn key_accepts(state: &AppState, key: &ApiKey, secret: &str, now: i64) -> Option<Option<i64>> {
    let secrets = state.secrets();
    let current = secrets.verify_credential(CredentialKind::ApiSecret, secret, &key.secret_hash);
    let previous = match (&key.previous_secret_hash, key.previous_secret_expires_at) {
        (Some(hash), Some(until)) if until > now => {
            secrets.verify_credential(CredentialKind::ApiSecret, secret, hash)
        }
        _ => false,
    };
    if !key.is_usable(now) {
        return None;
    }
    match (current, previous) {
        (true, _) => Some(None),
        (false, true) => Some(key.previous_secret_expires_at),
        (false, false) => None,
    }
}

async fn obey(verdict: Verdict) -> Result<(), AuthError> {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Ok(())
        }
        Verdict::Refuse { retry_after } => Err(AuthError::Throttled(whole_seconds(retry_after))),
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Verifies an API key and secret (throttled, failures audited) and returns the key.
pub async fn verify_client(
    state: &AppState,
    public_key: &str,
    secret: &str,
    context: &RequestContext,
) -> Result<Arc<ApiKey>, AuthError> {
    verify_key(state, public_key, secret, context)
        .await
        .map(|(key, _)| key)
}

/// [`verify_client`], and when what the secret obtains must end (a previous secret's grace).
async fn verify_key(
    state: &AppState,
    public_key: &str,
    secret: &str,
    context: &RequestContext,
) -> Result<(Arc<ApiKey>, Option<i64>), AuthError> {
    let throttles = state.throttles();
    obey(throttles.check_address(context.ip, Instant::now())).await?;
    let credential = throttles.credential(public_key);
    let refused = match throttles.by_key.check(&credential, Instant::now()) {
        Verdict::Refuse { retry_after } => Some(whole_seconds(retry_after)),
        other => {
            obey(other).await?;
            None
        }
    };
    let failed = || {
        let now = Instant::now();
        throttles.record_address_failure(context.ip, now);
        throttles.by_key.record_failure(credential, now);
        Err(refused.map_or(AuthError::InvalidCredentials, AuthError::Throttled))
    };
    let key = state
        .subjects()
        .api_key_by_public_key(state.store(), public_key)
        .await?;
    let Some(key) = key else {
        // Same work as for a known key: one keyed hash and a constant-time comparison.
        let dummy = CredentialHash([0u8; 32]);
        let _ = state
            .secrets()
            .verify_credential(CredentialKind::ApiSecret, secret, &dummy);
        tracing::info!(request_id = ?context.request_id, "authentication failed: unknown API key");
        return failed();
    };
    let Some(ends_at) = key_accepts(state, &key, secret, now_unix()) else {
        let key_id = key.id.to_string();
        state.audit_queue().record(context.event(
            key.organization_id,
            "auth.failed",
            (ActorType::ApiKey, &key_id),
            ("api_key", &key_id),
        ));
        return failed();
    };
    Ok((key, ends_at))
}

/// Verifies an API key and secret and mints a token. `with_refresh` says whether to issue (and
/// store) a refresh token: Fiskil's endpoint and OAuth's client credentials grant have none.
pub async fn authenticate_api_key(
    state: &AppState,
    public_key: &str,
    secret: &str,
    with_refresh: bool,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let (key, family_expires_at) = verify_key(state, public_key, secret, context).await?;
    state.usage().record(key.id, now_unix());
    let key_id = key.id.to_string();
    let succeeded = context.event(
        key.organization_id,
        "auth.succeeded",
        (ActorType::ApiKey, &key_id),
        ("api_key", &key_id),
    );
    // The generation of the secret that was presented: the previous one's during a grace.
    let generation = match family_expires_at {
        Some(_) => key.secret_generation - 1,
        None => key.secret_generation,
    };
    issue(
        state,
        Subject {
            subject_type: SubjectType::ApiKey,
            id: key_id.clone(),
            organization_id: key.organization_id,
            env: key.kind.env(),
            role: key.role,
            token_version: key.token_version,
            key_generation: Some(generation),
        },
        with_refresh.then(|| RefreshSpec::new_family(family_expires_at)),
        vec![succeeded],
    )
    .await
}

/// Verifies a person's email and password. The token acts for `organization_id` when given,
/// otherwise for the person's oldest active membership. The env is `TEST`: people manage
/// resources; they do not call the platform's live API.
pub async fn authenticate_password(
    state: &AppState,
    email: &str,
    password: &str,
    organization_id: Option<OrganizationId>,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let throttles = state.throttles();
    obey(throttles.check_address(context.ip, Instant::now())).await?;
    let account = throttles.credential(&email.to_lowercase());
    let account_here = throttles.account_at(email, context.ip);
    let now = Instant::now();
    obey(throttles.by_account_at_address.check(&account_here, now)).await?;
    match throttles.by_account.check(&account, now) {
        Verdict::Refuse { .. } => {
            tokio::time::sleep(throttles.by_account.policy().max_delay).await;
        }
        other => obey(other).await?,
    }
    // Whether this address has failed for this account before: only then does the attempt
    // share the account's places in the password queue.
    let suspect = throttles
        .by_account_at_address
        .has_failures(&account_here, Instant::now());
    let user = state.store().user_by_email(email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = state
        .passwords()
        .verify(
            password.to_owned(),
            hash,
            suspect.then_some(account),
            context.ip.map(client_unit),
        )
        .await
        .map_err(|_| AuthError::Busy)?;
    let membership = match (&user, matches) {
        (Some(user), true) => {
            let mut memberships = state.store().memberships_of_user(user.id).await?;
            memberships.retain(|m| m.status == UserStatus::Active);
            memberships.sort_by_key(|m| (m.created_at, m.organization_id.to_string()));
            match organization_id {
                Some(wanted) => memberships
                    .into_iter()
                    .find(|m| m.organization_id == wanted),
                None => memberships.into_iter().next(),
            }
        }
        _ => None,
    };
    let Some(membership) = membership else {
        let now = Instant::now();
        throttles.record_address_failure(context.ip, now);
        throttles
            .by_account_at_address
            .record_failure(account_here, now);
        throttles.by_account.record_failure(account, now);
        if let Some(user) = user {
            // Looked up off the response path: a known address must not answer slower than
            // an unknown one.
            let (state, context) = (state.clone(), context.clone());
            tokio::spawn(async move {
                let Ok(memberships) = state.store().memberships_of_user(user.id).await else {
                    return;
                };
                if let Some(membership) = memberships.into_iter().min_by_key(|m| m.created_at) {
                    let user_id = user.id.to_string();
                    state.audit_queue().record(context.event(
                        membership.organization_id,
                        "auth.failed",
                        (ActorType::User, &user_id),
                        ("user", &user_id),
                    ));
                }
            });
        }
        return Err(AuthError::InvalidCredentials);
    };
    let user_id = membership.user_id.to_string();
    let succeeded = context.event(
        membership.organization_id,
        "auth.succeeded",
        (ActorType::User, &user_id),
        ("user", &user_id),
    );
    issue(
        state,
        Subject {
            subject_type: SubjectType::User,
            id: user_id.clone(),
            organization_id: membership.organization_id,
            env: Env::Test,
            role: membership.role,
            token_version: membership.token_version,
            key_generation: None,
        },
        Some(RefreshSpec::new_family(None)),
        vec![succeeded],
    )
    .await
}

/// Exchanges a refresh token for a new pair. Single use: presenting a spent token again revokes
/// its whole family (RFC 9700 §4.14.2).
///
/// With `client` (OAuth 2.0 callers that authenticated), the token must have been issued to that
/// API key; a token of another subject is refused without being spent.
pub async fn refresh(
    state: &AppState,
    presented: &str,
    client: Option<&ApiKey>,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let now = now_unix();
    let Some(token) = find_refresh_token(state, presented).await? else {
        return Err(AuthError::InvalidCredentials);
    };
    if token.revoked_at.is_some() || token.expires_at <= now {
        return Err(AuthError::InvalidCredentials);
    }
    if client.is_some_and(|key| key.id.to_string() != token.subject_id) {
        return Err(AuthError::InvalidCredentials);
    }
    if token.family_expires_at.is_some_and(|end| end <= now) {
        return Err(AuthError::InvalidCredentials);
    }
    // Judged from the subject as it is now, whatever was cached or raced when the family began.
    let Some((standing, family_expires_at)) = family_standing(state, &token, now).await? else {
        return Err(AuthError::InvalidCredentials);
    };
    // Measured against the clock now: a concurrent spend may be stamped later than `now`.
    let within_grace = |used_at: i64| {
        let grace = state.token_settings().reuse_grace;
        grace > 0 && now_unix() - used_at < grace
    };
    // A client that lost the response to its refresh may retry within the grace window; any
    // other reuse of a spent token revokes its family.
    let retry = match token.used_at {
        Some(used_at) if within_grace(used_at) => true,
        Some(_) => {
            revoke_family_on_reuse(state, &token, context).await?;
            return Err(AuthError::InvalidCredentials);
        }
        None => false,
    };
    let subject = || Subject {
        subject_type: token.subject_type,
        id: token.subject_id.clone(),
        organization_id: token.organization_id,
        env: token.env,
        role: standing.role,
        token_version: standing.token_version,
        key_generation: token.key_generation,
    };
    let refreshed = || {
        vec![context.event(
            token.organization_id,
            "token.refreshed",
            (actor_type(token.subject_type), &token.subject_id),
            ("refresh_token", &token.family_id),
        )]
    };
    let successor = |spend: bool| RefreshSpec {
        family_id: token.family_id.clone(),
        // The successor is stored in the same transaction that spends this token.
        spend_parent: spend.then(|| token.id.clone()),
        family_expires_at,
    };
    match try_issue(state, subject(), Some(successor(!retry)), refreshed()).await? {
        Some(issued) => Ok(issued),
        None => {
            // Spent concurrently: within the grace window that is a retry, otherwise reuse.
            let spent = state.store().refresh_token(&token.id).await?;
            if spent.and_then(|t| t.used_at).is_some_and(within_grace) {
                issue(state, subject(), Some(successor(false)), refreshed()).await
            } else {
                revoke_family_on_reuse(state, &token, context).await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }
}

/// A stored refresh token by its plain value: looked up by the selector it starts with (its
/// id), then accepted only when the keyed hash of the whole value matches, compared in constant
/// time. A value without a well-formed selector costs no lookup.
pub async fn find_refresh_token(
    state: &AppState,
    presented: &str,
) -> Result<Option<RefreshToken>, StoreError> {
    let Some(id) = PlainCredential::selector_of(presented)
        .and_then(|selector| uuid::Uuid::try_parse(selector).ok())
    else {
        return Ok(None);
    };
    let token = state.store().refresh_token(&id.to_string()).await?;
    Ok(token.filter(|token| {
        state.secrets().verify_credential(
            CredentialKind::RefreshToken,
            presented,
            &token.token_hash,
        )
    }))
}

/// Whether a refresh token could be exchanged now (unspent, unrevoked, unexpired, its family
/// not ended, and its subject still active).
pub async fn refresh_token_is_active(
    state: &AppState,
    token: &RefreshToken,
) -> Result<bool, StoreError> {
    let now = now_unix();
    let live = token.revoked_at.is_none() && token.used_at.is_none() && token.expires_at > now;
    Ok(live && family_standing(state, token, now).await?.is_some())
}

/// Whether a refresh token's family may go on at `now`, judged from its subject as it is in the
/// store (see [`Standing::end_for`]), and until when: its own end, or sooner when the API key's
/// secret it was obtained with has been rotated since. `None` when the family may not go on.
async fn family_standing(
    state: &AppState,
    token: &RefreshToken,
    now: i64,
) -> Result<Option<(Standing, Option<i64>)>, StoreError> {
    let Some(standing) = current_standing(
        state.store(),
        token.subject_type,
        &token.subject_id,
        token.organization_id,
    )
    .await?
    else {
        return Ok(None);
    };
    let Some(rotation_end) =
        standing.end_for(token.subject_token_version, token.key_generation, now)
    else {
        return Ok(None);
    };
    let end = match (token.family_expires_at, rotation_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if end.is_some_and(|end| end <= now) {
        return Ok(None);
    }
    Ok(Some((standing, end)))
}

/// Revokes a refresh token's whole family (RFC 7009), recording `token.revoked`.
pub async fn revoke_refresh_token(
    state: &AppState,
    token: &RefreshToken,
    actor: (ActorType, &str),
    context: &RequestContext,
) -> Result<(), StoreError> {
    if token.revoked_at.is_some() {
        return Ok(());
    }
    let event = context.event(
        token.organization_id,
        "token.revoked",
        actor,
        ("refresh_token", &token.family_id),
    );
    state
        .store()
        .revoke_refresh_family(&token.family_id, now_unix(), &[event])
        .await
}

async fn revoke_family_on_reuse(
    state: &AppState,
    token: &RefreshToken,
    context: &RequestContext,
) -> Result<(), AuthError> {
    tracing::warn!(request_id = ?context.request_id, family = %token.family_id, "refresh token reuse: revoking its family");
    let event = context.event(
        token.organization_id,
        "token.reuse_detected",
        (actor_type(token.subject_type), &token.subject_id),
        ("refresh_token", &token.family_id),
    );
    state
        .store()
        .revoke_refresh_family(&token.family_id, now_unix(), &[event])
        .await?;
    Ok(())
}

pub fn actor_type(subject: SubjectType) -> ActorType {
    match subject {
        SubjectType::ApiKey => ActorType::ApiKey,
        SubjectType::User => ActorType::User,
    }
}

/// Where a refresh token goes: its family, the token it replaces (spent in the same
/// transaction), and the family's hard end.
struct RefreshSpec {
    family_id: String,
    spend_parent: Option<String>,
    family_expires_at: Option<i64>,
}

impl RefreshSpec {
    fn new_family(family_expires_at: Option<i64>) -> Self {
        Self {
            family_id: uuid::Uuid::now_v7().to_string(),
            spend_parent: None,
            family_expires_at,
        }
    }
}

struct Subject {
    subject_type: SubjectType,
    id: String,
    organization_id: OrganizationId,
    env: Env,
    role: Role,
    token_version: i64,
    /// For an API key: the generation of the secret presented.
    key_generation: Option<i64>,
}

/// Mints the access token and, with a family, stores a new refresh token with `events`.
async fn issue(
    state: &AppState,
    subject: Subject,
    refresh: Option<RefreshSpec>,
    events: Vec<AuditEvent>,
) -> Result<IssuedTokens, AuthError> {
    // Only a spent parent refuses, and only `refresh` spends one.
    try_issue(state, subject, refresh, events)
        .await?
        .ok_or(AuthError::InvalidCredentials)
}

/// Mints the access token and, with a refresh spec, stores the refresh token with `events`;
/// `None` when the parent it replaces was spent concurrently.
async fn try_issue(
    state: &AppState,
    subject: Subject,
    refresh: Option<RefreshSpec>,
    events: Vec<AuditEvent>,
) -> Result<Option<IssuedTokens>, AuthError> {
    let now = now_unix();
    let keys = state.signing_keys().current();
    let claims = AccessClaims {
        iss: keys.issuer().to_owned(),
        sub: subject.id.clone(),
        organization: subject.organization_id.to_string(),
        env: subject.env,
        subject_type: subject.subject_type,
        iat: now,
        nbf: now,
        exp: now + state.token_settings().access_ttl,
        jti: uuid::Uuid::now_v7().simple().to_string(),
        role: Some(subject.role),
        token_version: subject.token_version,
        key_generation: subject.key_generation,
    };
    let access_token = keys.sign(&claims);
    let refresh_token = match refresh {
        Some(spec) => {
            let id = uuid::Uuid::now_v7();
            let plain = PlainCredential::with_selector(&id.simple().to_string());
            let mut expires_at = now + state.token_settings().refresh_ttl;
            if let Some(end) = spec.family_expires_at {
                expires_at = expires_at.min(end);
            }
            let record = RefreshToken {
                id: id.to_string(),
                family_id: spec.family_id,
                token_hash: state
                    .secrets()
                    .hash_credential(CredentialKind::RefreshToken, plain.expose()),
                subject_type: subject.subject_type,
                subject_id: subject.id,
                organization_id: subject.organization_id,
                env: subject.env,
                created_at: now,
                expires_at,
                used_at: None,
                revoked_at: None,
                family_expires_at: spec.family_expires_at,
                key_generation: subject.key_generation,
                subject_token_version: subject.token_version,
            };
            let issue = RefreshIssue {
                token: record,
                spend_parent: spec.spend_parent,
                events,
            };
            if !state.refresh_tokens().issue(issue).await? {
                return Ok(None);
            }
            Some((plain, expires_at))
        }
        None => {
            // No refresh token, so no change to write them with: like failures, they go to the
            // batched writer instead of costing each token request a transaction.
            for event in events {
                state.audit_queue().record(event);
            }
            None
        }
    };
    Ok(Some(IssuedTokens {
        access_token,
        claims,
        refresh_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::client_unit;

    #[test]
    fn clients_are_throttled_by_ipv4_address_or_ipv6_slash_64() {
        let unit = |text: &str| client_unit(text.parse().unwrap()).to_string();
        assert_eq!(unit("192.0.2.7"), "192.0.2.7");
        assert_eq!(unit("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(unit("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(unit("2001:db8:1:2::1"), unit("2001:db8:1:2:ffff::9"));
        assert_ne!(unit("2001:db8:1:2::1"), unit("2001:db8:1:3::1"));
    }
}
