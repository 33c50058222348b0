//! Turning credentials into tokens: API key and secret, or email and password. The one place
//! that decides whether a credential is good; [`crate::service::tokens`] mints the pair and
//! [`crate::service::refresh`] exchanges refresh tokens.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyplane_core::OrganizationId;
use keyplane_core::audit::AuditAction;
use keyplane_core::records::{ActorType, ApiKey, Membership};
use keyplane_core::secrets::{CredentialHash, CredentialKind};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::SubjectType;
use keyplane_core::values::Env;

use crate::infra::throttle::{Verdict, client_unit};
use crate::service::context::RequestContext;
use crate::service::tokens::{AuthError, IssuedTokens, RefreshSpec, Subject, issue};
use crate::state::AppState;

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
            AuditAction::AuthFailed,
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
    grant: KeyGrant,
    context: &RequestContext,
) -> Result<IssuedTokens, AuthError> {
    let (key, family_expires_at) = verify_key(state, public_key, secret, context).await?;
    state.usage().record(key.id, now_unix());
    let key_id = key.id.to_string();
    let succeeded = context.event(
        key.organization_id,
        AuditAction::AuthSucceeded,
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
            access_ttl: grant.access_ttl(state),
        },
        (grant == KeyGrant::Auth).then(|| RefreshSpec::new_family(family_expires_at)),
        vec![succeeded],
    )
    .await
}

/// Which endpoint turns an API key and secret into a token: it decides whether a refresh token
/// comes with it and how long the access token lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyGrant {
    /// `POST /api/v0/auth`: an access and a refresh token.
    Auth,
    /// Fiskil's `POST /v1/token`: an access token only, living `--fiskil-token-ttl` (600 s by
    /// default, as Fiskil documents).
    Fiskil,
    /// OAuth 2.0 `client_credentials`: an access token only.
    ClientCredentials,
}

impl KeyGrant {
    fn access_ttl(self, state: &AppState) -> i64 {
        let settings = state.token_settings();
        match self {
            KeyGrant::Fiskil => settings.fiskil_ttl,
            KeyGrant::Auth | KeyGrant::ClientCredentials => settings.access_ttl,
        }
    }
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
    let (membership, succeeded) =
        verify_password(state, email, password, organization_id, context).await?;
    let user_id = membership.user_id.to_string();
    issue(
        state,
        Subject {
            subject_type: SubjectType::User,
            id: user_id,
            organization_id: membership.organization_id,
            env: Env::Test,
            role: membership.role,
            token_version: membership.token_version,
            key_generation: None,
            access_ttl: state.token_settings().access_ttl,
        },
        Some(RefreshSpec::new_family(None)),
        vec![succeeded],
    )
    .await
}

/// Verifies a person's email and password (Argon2id, throttled, failures audited): the
/// membership they act in (in `organization_id` when given, otherwise their oldest active
/// one) and the `auth.succeeded` event to store with whatever the sign-in creates. Shared by
/// `POST /api/v0/auth` and the web console's sign-in.
pub async fn verify_password(
    state: &AppState,
    email: &str,
    password: &str,
    organization_id: Option<OrganizationId>,
    context: &RequestContext,
) -> Result<(Membership, keyplane_core::records::AuditEvent), AuthError> {
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
            memberships.retain(Membership::may_act);
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
                        AuditAction::AuthFailed,
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
        AuditAction::AuthSucceeded,
        (ActorType::User, &user_id),
        ("user", &user_id),
    );
    Ok((membership, succeeded))
}
