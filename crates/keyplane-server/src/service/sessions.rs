//! Web console sessions: signing in with email and password (the API's own check, throttles and
//! audit, [`credentials::verify_password`]), which organization a session acts for, and
//! signing out. A session stands for the same claims a person's access token carries, so
//! whether it may still act is decided by [`access::resolve`], with the same subjects cache:
//! disabling or removing the person ends their sessions within [`access::SUBJECT_STATE_TTL`]
//! on every node, as it ends their tokens.

use keyplane_core::OrganizationId;
use keyplane_core::audit::AuditAction;
use keyplane_core::records::{AuditEvent, ConsoleSession, Membership, Organization};
use keyplane_core::secrets::{CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, SubjectType};
use keyplane_core::values::{Env, Role};
use keyplane_store::StoreError;

use crate::service::access::{self, AccessError, Actor};
use crate::service::context::RequestContext;
use crate::service::credentials;
use crate::service::tokens::AuthError;
use crate::state::AppState;

/// Longest session id read from a cookie; ours are 43 characters.
const MAX_SESSION_ID_LENGTH: usize = 64;

/// A signed-in person: their session and the caller they act as.
#[derive(Clone, Debug)]
pub struct Signed {
    pub session: ConsoleSession,
    pub actor: Actor,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown, ended, or of a person who may no longer act in its organization.
    #[error("no session")]
    Absent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccessError> for SessionError {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::Invalid(_) => SessionError::Absent,
            AccessError::Store(error) => SessionError::Store(error.for_each_caller()),
        }
    }
}

/// Signs a person in: the session's id (for the cookie, shown once) when the email and password
/// are good. Acts for `organization_id` when given, otherwise the person's oldest membership.
pub async fn sign_in(
    state: &AppState,
    email: &str,
    password: &str,
    organization_id: Option<OrganizationId>,
    context: &RequestContext,
) -> Result<PlainCredential, AuthError> {
    let (membership, succeeded) =
        credentials::verify_password(state, email, password, organization_id, context).await?;
    Ok(start(state, &membership, vec![succeeded]).await?)
}

/// Begins a session for a membership (after a sign-in, an accepted invitation or the first-run
/// setup), storing `events` with it; its id, for the cookie.
pub async fn start(
    state: &AppState,
    membership: &Membership,
    events: Vec<AuditEvent>,
) -> Result<PlainCredential, StoreError> {
    let id = PlainCredential::generate();
    let now = now_unix();
    let session = ConsoleSession {
        id_hash: state
            .secrets()
            .hash_credential(CredentialKind::ConsoleSession, id.expose()),
        user_id: membership.user_id,
        organization_id: membership.organization_id,
        token_version: membership.token_version,
        csrf_token: PlainCredential::generate().into_string(),
        created_at: now,
        last_seen_at: now,
    };
    let expired = ConsoleSession::expiry_bounds(now, state.session_limits());
    state
        .store()
        .create_console_session(&session, expired, &events)
        .await?;
    Ok(id)
}

/// The session a cookie names, while it lasts and its person may act; records that it was seen
/// (at most once a minute).
pub async fn current(state: &AppState, id: &str) -> Result<Signed, SessionError> {
    if id.is_empty() || id.len() > MAX_SESSION_ID_LENGTH {
        return Err(SessionError::Absent);
    }
    let hash = state
        .secrets()
        .hash_credential(CredentialKind::ConsoleSession, id);
    let session = state
        .store()
        .console_session(&hash)
        .await?
        .ok_or(SessionError::Absent)?;
    let now = now_unix();
    let limits = state.session_limits();
    if !session.is_live(now, limits) {
        state.store().delete_console_session(&hash, &[]).await?;
        return Err(SessionError::Absent);
    }
    let claims = AccessClaims {
        iss: state.issuer(),
        sub: session.user_id.to_string(),
        organization: session.organization_id.to_string(),
        env: Env::Test,
        subject_type: SubjectType::User,
        iat: session.created_at,
        nbf: session.created_at,
        exp: session.created_at + limits.lifetime,
        jti: String::new(),
        role: None,
        token_version: session.token_version,
        key_generation: None,
    };
    let actor = access::resolve(state, claims).await?;
    if session.needs_touch(now) {
        state.store().touch_console_session(&hash, now).await?;
    }
    Ok(Signed { session, actor })
}

/// The organizations a person may pick for their session, with their role in each, oldest
/// membership first.
pub async fn organizations(
    state: &AppState,
    signed: &Signed,
) -> Result<Vec<(Organization, Role)>, StoreError> {
    let mut memberships = state
        .store()
        .memberships_of_user(signed.session.user_id)
        .await?;
    memberships.retain(Membership::may_act);
    memberships.sort_by_key(|m| (m.created_at, m.organization_id.to_string()));
    // Every page shows them: through the per-node organization cache the API's visibility walk
    // uses, not one database read per membership per page.
    let mut found = Vec::with_capacity(memberships.len());
    for membership in memberships {
        if let Some(organization) = state
            .subjects()
            .organization(state.store(), membership.organization_id)
            .await?
        {
            found.push((Organization::clone(&organization), membership.role));
        }
    }
    Ok(found)
}

/// Points the session at another organization the person may act in; false when they may not.
pub async fn switch(
    state: &AppState,
    signed: &Signed,
    organization_id: OrganizationId,
) -> Result<bool, StoreError> {
    let Some(membership) = state
        .store()
        .membership(organization_id, signed.session.user_id)
        .await?
        .filter(Membership::may_act)
    else {
        return Ok(false);
    };
    state
        .store()
        .switch_console_session(
            &signed.session.id_hash,
            organization_id,
            membership.token_version,
        )
        .await
}

/// The audit event of a person ending their own sessions, in the organization they act for.
fn signed_out(signed: &Signed, context: &RequestContext, action: AuditAction) -> AuditEvent {
    context.event_by(
        &signed.actor,
        signed.actor.organization_id,
        action,
        ("user", &signed.actor.subject_id),
    )
}

/// Ends this session, recording `user.signed_out` with it (nothing when it had ended already).
pub async fn sign_out(
    state: &AppState,
    signed: &Signed,
    context: &RequestContext,
) -> Result<(), StoreError> {
    let event = signed_out(signed, context, AuditAction::SignedOut);
    state
        .store()
        .delete_console_session(&signed.session.id_hash, &[event])
        .await
        .map(|_| ())
}

/// Ends every session of the signed-in person, on every node, recording
/// `user.signed_out_everywhere` with it.
pub async fn sign_out_everywhere(
    state: &AppState,
    signed: &Signed,
    context: &RequestContext,
) -> Result<u64, StoreError> {
    let event = signed_out(signed, context, AuditAction::SignedOutEverywhere);
    state
        .store()
        .delete_console_sessions_of_user(signed.session.user_id, &[event])
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    /// The new password breaks the rule (field `password`).
    #[error(transparent)]
    Invalid(#[from] keyplane_core::ValidationError),
    /// The current password is wrong (or its account throttled: the same refusal as sign-in).
    #[error(transparent)]
    Refused(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changes the signed-in person's password: the current one is checked as a sign-in checks it
/// (Argon2id, throttles, `auth.failed` on a wrong one); every other session of theirs ends and
/// their refresh tokens are revoked (as a reset link does: one rule, in the store's
/// `set_password`).
pub async fn change_password(
    state: &AppState,
    signed: &Signed,
    current: &str,
    new: String,
    context: &RequestContext,
) -> Result<(), PasswordChangeError> {
    keyplane_core::values::check_password(&new)?;
    let user = state
        .store()
        .user(signed.session.user_id)
        .await?
        .ok_or(AuthError::InvalidCredentials)?;
    credentials::verify_password(
        state,
        user.email.as_str(),
        current,
        Some(signed.actor.organization_id),
        context,
    )
    .await?;
    let hash = state
        .passwords()
        .hash(new)
        .await
        .map_err(|_| AuthError::Busy)?;
    let changed = context.event_by(
        &signed.actor,
        signed.actor.organization_id,
        AuditAction::PasswordChanged,
        ("user", &signed.actor.subject_id),
    );
    state
        .store()
        .change_password(
            user.id,
            &hash,
            &signed.session.id_hash,
            now_unix(),
            &[changed],
        )
        .await?;
    Ok(())
}
