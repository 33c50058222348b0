//! Turning credentials into tokens: API key and secret, email and password, or a refresh token.
//! The one place that decides whether a credential is good, mints the pair, and records the
//! outcome.
//!
//! - The secret check is HMAC-SHA-256 under the pepper with a constant-time comparison; an
//!   unknown key is checked against a dummy hash so that it costs the same as a wrong secret, and
//!   failure events go to the background [`crate::audit::AuditQueue`], so neither waits for a
//!   write.
//! - Passwords are Argon2id, on the bounded pool of [`crate::passwords`].
//! - Failures are throttled per client address and per credential ([`crate::throttle`]). A
//!   throttled address is refused before any lookup. A throttled API key still has its secret
//!   checked: a right secret succeeds, so a flood of wrong ones cannot lock its owner out, and
//!   guessing a 256-bit secret is hopeless anyway. A throttled account is refused before its
//!   password is checked, because passwords can be guessed; the refusal ends when the failures
//!   drain, as `Retry-After` says.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use keyplane_core::records::{ActorType, ApiKey, AuditEvent, RefreshToken};
use keyplane_core::secrets::{CredentialHash, CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType};
use keyplane_core::values::{Env, UserStatus};
use keyplane_core::{AuditEventId, OrganizationId};
use keyplane_store::StoreError;

use crate::access::{current_role, key_is_usable};
use crate::app::AppState;
use crate::throttle::{Throttle, ThrottlePolicy, Verdict};

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
    fn event(
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
}

/// Whether a key may obtain tokens now, and whether `secret` is its current secret (or its
/// previous one within a rotation's grace period).
fn key_accepts(state: &AppState, key: &ApiKey, secret: &str, now: i64) -> bool {
    let secrets = state.secrets();
    let current = secrets.verify_credential(CredentialKind::ApiSecret, secret, &key.secret_hash);
    let previous = match (&key.previous_secret_hash, key.previous_secret_expires_at) {
        (Some(hash), Some(until)) if until > now => {
            secrets.verify_credential(CredentialKind::ApiSecret, secret, hash)
        }
        _ => false,
    };
    (current || previous) && key_is_usable(key, now)
}

/// Failed-authentication throttles of one node.
pub struct Throttles {
    by_address: Throttle<IpAddr>,
    /// Keyed by a keyed hash of the API key or the lowercased email: bounded memory per entry.
    by_credential: Throttle<u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl Throttles {
    pub fn new(by_address: ThrottlePolicy, by_credential: ThrottlePolicy) -> Self {
        Self {
            by_address: Throttle::new(by_address),
            by_credential: Throttle::new(by_credential),
            hasher: Default::default(),
        }
    }

    fn credential(&self, credential: &str) -> u64 {
        self.hasher.hash_one(credential)
    }

    /// Before an attempt: refuse a throttled address, slow down a suspicious one.
    async fn admit_address(&self, context: &RequestContext) -> Result<(), AuthError> {
        let Some(ip) = context.ip else { return Ok(()) };
        obey(self.by_address.check(&ip, Instant::now())).await
    }

    fn record_failure(&self, context: &RequestContext, credential: u64) {
        let now = Instant::now();
        if let Some(ip) = context.ip {
            self.by_address.record_failure(ip, now);
        }
        self.by_credential.record_failure(credential, now);
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
) -> Result<ApiKey, AuthError> {
    let throttles = state.throttles();
    throttles.admit_address(context).await?;
    let credential = throttles.credential(public_key);
    let refused = match throttles.by_credential.check(&credential, Instant::now()) {
        Verdict::Refuse { retry_after } => Some(whole_seconds(retry_after)),
        other => {
            obey(other).await?;
            None
        }
    };
    let failed = || {
        throttles.record_failure(context, credential);
        Err(refused.map_or(AuthError::InvalidCredentials, AuthError::Throttled))
    };
    let Some(key) = state.store().api_key_by_public_key(public_key).await? else {
        // Same work as for a known key: one keyed hash and a constant-time comparison.
        let dummy = CredentialHash([0u8; 32]);
        let _ = state
            .secrets()
            .verify_credential(CredentialKind::ApiSecret, secret, &dummy);
        tracing::info!(request_id = ?context.request_id, "authentication failed: unknown API key");
        return failed();
    };
    if !key_accepts(state, &key, secret, now_unix()) {
        let key_id = key.id.to_string();
        state.audit_queue().record(context.event(
            key.organization_id,
            "auth.failed",
            (ActorType::ApiKey, &key_id),
            ("api_key", &key_id),
        ));
        return failed();
    }
    Ok(key)
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
    let key = verify_client(state, public_key, secret, context).await?;
    state.usage().record(key.id, now_unix());
    let key_id = key.id.to_string();
    let succeeded = context.event(
        key.organization_id,
        "auth.succeeded",
        (ActorType::ApiKey, &key_id),
        ("api_key", &key_id),
    );
    issue(
        state,
        Subject {
            subject_type: SubjectType::ApiKey,
            id: key_id.clone(),
            organization_id: key.organization_id,
            env: key.kind.env(),
        },
        with_refresh.then(|| uuid::Uuid::now_v7().to_string()),
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
    throttles.admit_address(context).await?;
    let credential = throttles.credential(&email.to_lowercase());
    obey(throttles.by_credential.check(&credential, Instant::now())).await?;
    let user = state.store().user_by_email(email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = state
        .passwords()
        .verify(password.to_owned(), hash)
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
        throttles.record_failure(context, credential);
        if let Some(user) = &user
            && let Some(membership) = state
                .store()
                .memberships_of_user(user.id)
                .await?
                .into_iter()
                .min_by_key(|m| m.created_at)
        {
            let user_id = user.id.to_string();
            state.audit_queue().record(context.event(
                membership.organization_id,
                "auth.failed",
                (ActorType::User, &user_id),
                ("user", &user_id),
            ));
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
        },
        Some(uuid::Uuid::now_v7().to_string()),
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
    let hash = state
        .secrets()
        .hash_credential(CredentialKind::RefreshToken, presented);
    let Some(token) = state.store().refresh_token_by_hash(&hash).await? else {
        return Err(AuthError::InvalidCredentials);
    };
    if token.revoked_at.is_some() || token.expires_at <= now {
        return Err(AuthError::InvalidCredentials);
    }
    if client.is_some_and(|key| key.id.to_string() != token.subject_id) {
        return Err(AuthError::InvalidCredentials);
    }
    let within_grace = |used_at: i64| now - used_at < state.token_settings().reuse_grace;
    match token.used_at {
        // A client that lost the response to its refresh may retry within the grace window.
        Some(used_at) if within_grace(used_at) => {}
        Some(_) => {
            revoke_family_on_reuse(state, &token, context).await?;
            return Err(AuthError::InvalidCredentials);
        }
        None => {
            if !state.store().spend_refresh_token(&token.id, now).await? {
                // Spent concurrently: the same rule as a later reuse.
                let spent = state.store().refresh_token_by_hash(&hash).await?;
                if !spent.and_then(|t| t.used_at).is_some_and(within_grace) {
                    revoke_family_on_reuse(state, &token, context).await?;
                    return Err(AuthError::InvalidCredentials);
                }
            }
        }
    }
    if current_role(
        state.store(),
        token.subject_type,
        &token.subject_id,
        token.organization_id,
    )
    .await?
    .is_none()
    {
        return Err(AuthError::InvalidCredentials);
    }
    let refreshed = context.event(
        token.organization_id,
        "token.refreshed",
        (actor_type(token.subject_type), &token.subject_id),
        ("refresh_token", &token.family_id),
    );
    issue(
        state,
        Subject {
            subject_type: token.subject_type,
            id: token.subject_id.clone(),
            organization_id: token.organization_id,
            env: token.env,
        },
        Some(token.family_id.clone()),
        vec![refreshed],
    )
    .await
}

/// A stored refresh token by its plain value.
pub async fn find_refresh_token(
    state: &AppState,
    presented: &str,
) -> Result<Option<RefreshToken>, StoreError> {
    let hash = state
        .secrets()
        .hash_credential(CredentialKind::RefreshToken, presented);
    state.store().refresh_token_by_hash(&hash).await
}

/// Whether a refresh token could be exchanged now (unspent, unrevoked, unexpired, and its
/// subject still active).
pub async fn refresh_token_is_active(
    state: &AppState,
    token: &RefreshToken,
) -> Result<bool, StoreError> {
    let now = now_unix();
    let live = token.revoked_at.is_none() && token.used_at.is_none() && token.expires_at > now;
    Ok(live
        && current_role(
            state.store(),
            token.subject_type,
            &token.subject_id,
            token.organization_id,
        )
        .await?
        .is_some())
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

struct Subject {
    subject_type: SubjectType,
    id: String,
    organization_id: OrganizationId,
    env: Env,
}

/// Mints the access token and, with a family, stores a new refresh token with `events`.
async fn issue(
    state: &AppState,
    subject: Subject,
    refresh_family: Option<String>,
    events: Vec<AuditEvent>,
) -> Result<IssuedTokens, AuthError> {
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
    };
    let access_token = keys.sign(&claims);
    let refresh_token = match refresh_family {
        Some(family_id) => {
            let plain = PlainCredential::generate();
            let expires_at = now + state.token_settings().refresh_ttl;
            let record = RefreshToken {
                id: uuid::Uuid::now_v7().to_string(),
                family_id,
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
            };
            state.store().issue_refresh_token(&record, &events).await?;
            Some((plain, expires_at))
        }
        None => {
            state.store().record_audit_events(&events).await?;
            None
        }
    };
    Ok(IssuedTokens {
        access_token,
        claims,
        refresh_token,
    })
}
