//! People, memberships and invitations (README, "People and invitations"): who may do what, the rules, the
//! audit events, the mail.

use keyplane_core::audit::AuditAction;
use keyplane_core::paging::Page;
use keyplane_core::policy::Action;
use keyplane_core::records::{
    ActorType, Invitation, InvitationQuery, Membership, MembershipOutcome, Organization,
    PendingInvitation, User, UserQuery,
};
use keyplane_core::secrets::{CredentialKind, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::SubjectType;
use keyplane_core::values::{Email, Role, UserStatus, ValidationError, check_text};
use keyplane_core::{InvitationId, UserId};
use keyplane_store::StoreError;

use crate::service::access::{Actor, Forbidden};
use crate::service::bootstrap::invitation_url;
use crate::service::context::RequestContext;
use crate::state::AppState;

/// Password length bounds, in characters.

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("user not found")]
    NotFound,
    #[error("invitation not found")]
    InvitationNotFound,
    #[error("the role does not allow this")]
    Forbidden,
    #[error("already a member")]
    AlreadyMember,
    #[error("the organization needs an active owner")]
    LastOwner,
    #[error("the invitation is invalid, used, revoked or expired")]
    InvalidInvitation,
    #[error("busy")]
    Busy,
    #[error("the membership changed concurrently")]
    Concurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Forbidden> for UserError {
    fn from(_: Forbidden) -> Self {
        UserError::Forbidden
    }
}

pub async fn list(
    state: &AppState,
    organization: &Organization,
    query: &UserQuery,
) -> Result<Page<(User, Membership)>, UserError> {
    Ok(state.store().list_users(organization.id, query).await?)
}

/// A person of `organization`, or `NotFound` (for malformed ids too).
pub async fn find(
    state: &AppState,
    organization: &Organization,
    user_id: &str,
) -> Result<(User, Membership), UserError> {
    let id: UserId = user_id.parse().map_err(|_| UserError::NotFound)?;
    let membership = state
        .store()
        .membership(organization.id, id)
        .await?
        .ok_or(UserError::NotFound)?;
    let user = state.store().user(id).await?.ok_or(UserError::NotFound)?;
    Ok((user, membership))
}

fn optional_name(field: &str, value: &Option<String>) -> Result<(), ValidationError> {
    match value {
        Some(value) => check_text(field, value, 1, 100),
        None => Ok(()),
    }
}

/// Whom to invite, as asked.
pub struct Invite {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
}

/// Invites a person (existing or new) into `organization` and mails them a link.
pub async fn invite(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    organization: &Organization,
    request: Invite,
) -> Result<(User, Membership), UserError> {
    let Invite {
        email,
        first_name,
        last_name,
        role,
    } = request;
    actor.require(Action::ManageUsers)?;
    if role == Role::Owner {
        actor.require(Action::ManageOwners)?;
    }
    let email = Email::parse(email)?;
    optional_name("first_name", &first_name)?;
    optional_name("last_name", &last_name)?;
    let now = now_unix();
    let existing = state.store().user_by_email(email.as_str()).await?;
    let new_user = existing.is_none();
    let user = existing
        .unwrap_or_else(|| User::new(email.clone(), first_name.clone(), last_name.clone(), now));
    let membership = Membership {
        user_id: user.id,
        organization_id: organization.id,
        role,
        status: UserStatus::Invited,
        created_at: now,
        token_version: Membership::fresh_token_version(),
        invited_first_name: first_name,
        invited_last_name: last_name,
    };
    let token = PlainCredential::generate();
    let invitation = Invitation {
        id: InvitationId::new(),
        organization_id: organization.id,
        user_id: user.id,
        token_hash: state
            .secrets()
            .hash_credential(CredentialKind::InvitationToken, token.expose()),
        invited_by: actor.user_id(),
        created_at: now,
        expires_at: now + state.invitation_ttl(),
        accepted_at: None,
        revoked_at: None,
    };
    let invited = context.event_by(
        actor,
        organization.id,
        AuditAction::UserInvited,
        ("user", &user.id.to_string()),
    );
    match state
        .store()
        .invite(
            new_user.then_some(&user),
            &membership,
            &invitation,
            &[invited],
        )
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(UserError::AlreadyMember),
        Err(error) => return Err(error.into()),
    }
    mail_invitation(state, organization, &user, &token).await;
    Ok((user, membership))
}

async fn mail_invitation(
    state: &AppState,
    organization: &Organization,
    user: &User,
    token: &PlainCredential,
) {
    let body = format!(
        "You have been invited to {} on Keyplane.\n\n\
         Set your password here (the link works once, for {} hours):\n\n{}\n",
        organization.name,
        state.invitation_ttl() / 3600,
        invitation_url(state.public_url(), token),
    );
    if let Err(error) = state
        .mailer()
        .send(user.email.as_str(), "Your Keyplane invitation", body)
        .await
    {
        // The invitation stands; it can be resent once mail works.
        tracing::error!(%error, user = %user.id, "sending an invitation failed");
    }
}

/// How often a change is tried against a membership that changed between the check and the
/// write.
const ATTEMPTS: usize = 3;

/// The membership as it is now, after a write found it changed.
async fn reread(state: &AppState, membership: &Membership) -> Result<Membership, UserError> {
    state
        .store()
        .membership(membership.organization_id, membership.user_id)
        .await?
        .ok_or(UserError::NotFound)
}

/// Who may change or remove a membership as it is: the user-management right, and for an
/// owner's membership (or making someone an owner) the owners-only right.
fn may_change(
    actor: &Actor,
    current: &Membership,
    new_role: Option<Role>,
) -> Result<(), UserError> {
    actor.require(Action::ManageUsers)?;
    if current.role == Role::Owner || new_role == Some(Role::Owner) {
        actor.require(Action::ManageOwners)?;
    }
    Ok(())
}

/// Changes a person's role or status in `organization`. The right to do so is checked against
/// the membership as the store holds it when the change is written (a concurrent change sends
/// the check round again), so an admin cannot slip a change past a promotion to owner.
pub async fn update(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    mut current: Membership,
    role: Option<Role>,
    status: Option<UserStatus>,
) -> Result<Membership, UserError> {
    for _ in 0..ATTEMPTS {
        may_change(actor, &current, role)?;
        let mut changed = current.clone();
        if let Some(status) = status {
            changed.change_status(status)?;
        }
        if let Some(role) = role {
            changed.role = role;
        }
        let event = context.event_by(
            actor,
            current.organization_id,
            AuditAction::UserUpdated,
            ("user", &current.user_id.to_string()),
        );
        match state
            .store()
            .change_membership(&current, &changed, &[event])
            .await?
        {
            MembershipOutcome::Done => {
                forget(state, &changed).await;
                return Ok(changed);
            }
            MembershipOutcome::LastOwner => return Err(UserError::LastOwner),
            MembershipOutcome::NotFound => return Err(UserError::NotFound),
            MembershipOutcome::Stale => current = reread(state, &current).await?,
        }
    }
    Err(UserError::Concurrent)
}

pub async fn remove(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    mut current: Membership,
) -> Result<(), UserError> {
    for _ in 0..ATTEMPTS {
        may_change(actor, &current, None)?;
        let event = context.event_by(
            actor,
            current.organization_id,
            AuditAction::UserRemoved,
            ("user", &current.user_id.to_string()),
        );
        match state.store().remove_membership(&current, &[event]).await? {
            MembershipOutcome::Done => {
                forget(state, &current).await;
                return Ok(());
            }
            MembershipOutcome::LastOwner => return Err(UserError::LastOwner),
            MembershipOutcome::NotFound => return Err(UserError::NotFound),
            MembershipOutcome::Stale => current = reread(state, &current).await?,
        }
    }
    Err(UserError::Concurrent)
}

/// One page of the pending invitations of an organization, and how many are pending.
pub async fn pending_invitations(
    state: &AppState,
    organization: &Organization,
    listing: &InvitationQuery,
) -> Result<Page<PendingInvitation>, UserError> {
    Ok(state
        .store()
        .pending_invitations(organization.id, now_unix(), listing)
        .await?)
}

/// An invitation of an organization the caller can see, or `InvitationNotFound`.
pub async fn find_invitation(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<(Invitation, Organization), UserError> {
    let id: InvitationId = id.parse().map_err(|_| UserError::InvitationNotFound)?;
    let invitation = state
        .store()
        .invitation(id)
        .await?
        .ok_or(UserError::InvitationNotFound)?;
    let organization = crate::service::organizations::visible(
        state,
        actor,
        &invitation.organization_id.to_string(),
    )
    .await
    .map_err(|_| UserError::InvitationNotFound)?;
    Ok((invitation, organization))
}

/// Invitations follow the rule of the membership they offer: an owner's invitation is the
/// owners' to resend or revoke (revoking the first owner's invitation would leave the
/// organization with nobody who can ever sign in). Returns the role offered, which the change
/// is then made conditional on.
async fn may_manage_invitation(
    state: &AppState,
    actor: &Actor,
    invitation: &Invitation,
) -> Result<Role, UserError> {
    actor.require(Action::ManageUsers)?;
    let offered = state
        .store()
        .membership(invitation.organization_id, invitation.user_id)
        .await?
        .ok_or(UserError::InvitationNotFound)?;
    may_change(actor, &offered, None)?;
    Ok(offered.role)
}

/// Runs `change` (conditional on the role the invitation offers) with the caller's right checked
/// against that role; when the change finds the role changed meanwhile, the right is checked
/// again against the new one. `InvitationNotFound` when it is no longer pending.
async fn checked_invitation_change<F, Fut>(
    state: &AppState,
    actor: &Actor,
    invitation: &Invitation,
    change: F,
) -> Result<Role, UserError>
where
    F: Fn(Role) -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let mut offered = may_manage_invitation(state, actor, invitation).await?;
    for _ in 0..ATTEMPTS {
        if change(offered).await? {
            return Ok(offered);
        }
        let now_offered = may_manage_invitation(state, actor, invitation).await?;
        if now_offered == offered {
            return Err(UserError::InvitationNotFound);
        }
        offered = now_offered;
    }
    Err(UserError::Concurrent)
}

/// Mails a pending invitation again, with a new token (the old link stops working) and a new
/// expiry.
pub async fn resend(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    mut invitation: Invitation,
    organization: &Organization,
) -> Result<PendingInvitation, UserError> {
    let token = PlainCredential::generate();
    invitation.token_hash = state
        .secrets()
        .hash_credential(CredentialKind::InvitationToken, token.expose());
    invitation.expires_at = now_unix() + state.invitation_ttl();
    let resent = context.event_by(
        actor,
        organization.id,
        AuditAction::InvitationResent,
        ("invitation", &invitation.id.to_string()),
    );
    let role = checked_invitation_change(state, actor, &invitation, |offered| {
        state
            .store()
            .renew_invitation(&invitation, offered, std::slice::from_ref(&resent))
    })
    .await?;
    let user = state
        .store()
        .user(invitation.user_id)
        .await?
        .ok_or(UserError::InvitationNotFound)?;
    mail_invitation(state, organization, &user, &token).await;
    Ok(PendingInvitation {
        invitation,
        email: user.email.into_string(),
        role,
    })
}

pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    invitation: Invitation,
) -> Result<(), UserError> {
    let revoked = context.event_by(
        actor,
        invitation.organization_id,
        AuditAction::InvitationRevoked,
        ("invitation", &invitation.id.to_string()),
    );
    checked_invitation_change(state, actor, &invitation, |offered| {
        state.store().revoke_invitation(
            invitation.id,
            offered,
            now_unix(),
            std::slice::from_ref(&revoked),
        )
    })
    .await?;
    Ok(())
}

/// Accepts an invitation: sets the password (Argon2id) and names, activates the membership.
pub async fn accept(
    state: &AppState,
    context: &RequestContext,
    token: &str,
    password: String,
    first_name: Option<String>,
    last_name: Option<String>,
) -> Result<(User, Membership), UserError> {
    keyplane_core::values::check_password(&password)?;
    optional_name("first_name", &first_name)?;
    optional_name("last_name", &last_name)?;
    let hash = state
        .secrets()
        .hash_credential(CredentialKind::InvitationToken, token);
    let now = now_unix();
    let invitation = state
        .store()
        .invitation_by_hash(&hash)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
        .ok_or(UserError::InvalidInvitation)?;
    let mut user = state
        .store()
        .user(invitation.user_id)
        .await?
        .ok_or(UserError::InvalidInvitation)?;
    user.password_hash = Some(
        state
            .passwords()
            .hash(password)
            .await
            .map_err(|_| UserError::Busy)?,
    );
    if first_name.is_some() {
        user.first_name = first_name;
    }
    if last_name.is_some() {
        user.last_name = last_name;
    }
    // The person accepting is the actor: the token proved who they are.
    let user_id = user.id.to_string();
    let accepted = context.event(
        invitation.organization_id,
        AuditAction::InvitationAccepted,
        (ActorType::User, &user_id),
        ("user", &user_id),
    );
    if !state
        .store()
        .accept_invitation(&invitation, &user, now, &[accepted])
        .await?
    {
        return Err(UserError::InvalidInvitation);
    }
    let membership = state
        .store()
        .membership(invitation.organization_id, user.id)
        .await?
        .ok_or(UserError::InvalidInvitation)?;
    // This node may remember the person as unable to act here (a token of an earlier
    // membership was refused moments ago): their new tokens work at once.
    forget(state, &membership).await;
    Ok((user, membership))
}

async fn forget(state: &AppState, membership: &Membership) {
    state
        .subjects()
        .forget(
            SubjectType::User,
            &membership.user_id.to_string(),
            membership.organization_id,
        )
        .await;
}
