//! Keyplane's storage: the [`Store`] trait and its two implementations, SQLite (the embedded
//! default) and PostgreSQL (for several nodes). Both run the same SQL, written once in one
//! module per resource (`organizations`, `api_keys`, `people`, `invitations`, `refresh_tokens`,
//! `signing_keys`, `audit`, `bootstrap`, `idempotency`) against the engine traits of `engine`; only connection
//! setup, migrations and SQLite's in-place point reads differ (`sqlite`, `postgres`).

mod api_keys;
mod audit;
mod bootstrap;
mod bounded;
mod connections;
mod engine;
mod error;
mod idempotency;
mod in_place;
mod invitations;
mod organizations;
mod people;
mod postgres;
mod refresh_tokens;
mod rows;
mod sessions;
mod signing_keys;
mod sqlite;
mod store;

use async_trait::async_trait;
use keyplane_core::api_keys::ApiKeyQuery;
use keyplane_core::idempotency::{ClaimOutcome, IdempotencyClaim, KeptAnswer};
use keyplane_core::organizations::OrganizationQuery;
use keyplane_core::paging::Page;
use keyplane_core::records::{
    ApiKey, ApiKeyChanges, AuditEvent, AuditQuery, ConsoleSession, Invitation, InvitationQuery,
    Membership, MembershipOutcome, Organization, PasswordReset, PendingInvitation, RefreshIssue,
    RefreshToken, User, UserQuery,
};
use keyplane_core::secrets::CredentialHash;
use keyplane_core::tokens::StoredSigningKey;
use keyplane_core::values::{Env, Role};
use keyplane_core::{ApiKeyId, InvitationId, OrganizationId, UserId};

pub use api_keys::list_api_keys_sql;
pub use audit::list_audit_events_sql;
pub use bounded::Bounded;
pub use error::{DatabaseError, StoreError};
pub use invitations::pending_invitations_sql;
pub use people::list_users_sql;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// Everything `keyplane bootstrap` creates, written in one transaction.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub organization: Organization,
    pub user: User,
    pub membership: Membership,
    pub invitation: Invitation,
    pub api_key: ApiKey,
    pub events: Vec<AuditEvent>,
}

/// What deleting an organization did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrganizationDeletion {
    /// Deleted, with the ids of the API keys that went with it.
    Deleted(Vec<ApiKeyId>),
    /// It still manages organizations; nothing changed.
    ManagesOthers,
    /// It did not exist.
    NotFound,
}

/// The persistence Keyplane needs, as domain operations. Each mutating operation takes the audit
/// events that record it and writes them in the same transaction, so a change without its event
/// (or an event without its change) cannot happen.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which engine this is, for logs and metrics.
    fn engine(&self) -> &'static str;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Succeeds when the database stores a write: one row rewritten and committed.
    async fn probe_write(&self, now: i64) -> Result<(), StoreError>;

    /// Creates the first organization, its owner, the owner's invitation and a first API key.
    /// Fails with [`StoreError::AlreadyBootstrapped`], changing nothing, when any organization
    /// exists or a bootstrap has already run.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<(), StoreError>;

    /// Whether any organization exists (the console's first-run setup is offered until one does).
    async fn has_organizations(&self) -> Result<bool, StoreError>;

    async fn organization(&self, id: OrganizationId) -> Result<Option<Organization>, StoreError>;

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    async fn memberships_of_user(&self, user_id: UserId) -> Result<Vec<Membership>, StoreError>;

    async fn invitations_of_organization(
        &self,
        organization_id: OrganizationId,
    ) -> Result<Vec<Invitation>, StoreError>;

    /// Looks an API key up by its public `key`, the credential's first half.
    async fn api_key_by_public_key(&self, public_key: &str) -> Result<Option<ApiKey>, StoreError>;

    /// The organization's audit events, newest first.
    async fn audit_events(
        &self,
        organization_id: OrganizationId,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// One page of an organization's audit events and how many match.
    async fn list_audit_events(
        &self,
        organization_id: OrganizationId,
        query: &AuditQuery,
    ) -> Result<Page<AuditEvent>, StoreError>;

    async fn api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError>;

    /// Every stored signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;

    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;

    /// Rotation: stores `new` and retires every other unretired key at `retire_at`, in one
    /// transaction, but only while `expected_newest` is still the newest key (`None`: there is
    /// no key yet). Returns false, changing nothing, when another node rotated first.
    async fn rotate_signing_key(
        &self,
        new: &StoredSigningKey,
        retire_at: i64,
        expected_newest: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// A person by email address, whatever its case.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    /// A person's membership of one organization.
    async fn membership(
        &self,
        organization_id: OrganizationId,
        user_id: UserId,
    ) -> Result<Option<Membership>, StoreError>;

    /// One page of an organization's people (with their memberships) and how many match.
    async fn list_users(
        &self,
        organization_id: OrganizationId,
        query: &UserQuery,
    ) -> Result<Page<(User, Membership)>, StoreError>;

    /// Invites a person: stores the user when `new_user` (else the user exists), the membership
    /// and the invitation, with their audit events. [`StoreError::Conflict`] when the person
    /// already belongs to the organization (or the email was taken concurrently).
    async fn invite(
        &self,
        new_user: Option<&User>,
        membership: &Membership,
        invitation: &Invitation,
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// The operator's way back into an organization nobody can sign in to: makes the person
    /// (`new_user` when they have no account yet) an owner of the invitation's organization —
    /// invited, or still active when they already were — and stores the invitation, in one
    /// transaction. False when the organization is gone.
    async fn grant_owner_invitation(
        &self,
        new_user: Option<&User>,
        invitation: &Invitation,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Changes a membership from `expected` (the role and status the caller's right was checked
    /// against) to `changed`'s role and status, in one transaction that holds the organization's
    /// lock: `Stale` when the membership no longer has the expected role and status (nothing
    /// changes; check again), `LastOwner` when it would leave the organization without an active
    /// owner. A disable counts up the membership's token version.
    async fn change_membership(
        &self,
        expected: &Membership,
        changed: &Membership,
        events: &[AuditEvent],
    ) -> Result<MembershipOutcome, StoreError>;

    /// Removes a person from an organization (membership, invitations, refresh tokens there),
    /// while it still has `expected`'s role and status (else `Stale`), refusing to remove its
    /// last active owner.
    async fn remove_membership(
        &self,
        expected: &Membership,
        events: &[AuditEvent],
    ) -> Result<MembershipOutcome, StoreError>;

    /// One page of an organization's invitations still pending at `now` (not accepted, revoked
    /// or expired), with their people's emails and roles, and how many are pending.
    async fn pending_invitations(
        &self,
        organization_id: OrganizationId,
        now: i64,
        listing: &InvitationQuery,
    ) -> Result<Page<PendingInvitation>, StoreError>;

    async fn invitation(&self, id: InvitationId) -> Result<Option<Invitation>, StoreError>;

    async fn invitation_by_hash(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<Invitation>, StoreError>;

    /// Replaces a pending invitation's token and expiry (a resend), while the membership it
    /// offers has the role `offered` (the one the caller's right was checked against). False
    /// when it is no longer pending or offers another role now.
    async fn renew_invitation(
        &self,
        invitation: &Invitation,
        offered: Role,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Revokes a pending invitation while the membership it offers has the role `offered`, and
    /// removes that membership if it is still only invited. False when it is no longer pending
    /// or offers another role now.
    async fn revoke_invitation(
        &self,
        id: InvitationId,
        offered: Role,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Accepts a pending, unexpired invitation in one transaction: marks it accepted, sets the
    /// person's password (and names when given) and activates the membership. False, changing
    /// nothing, when it was not pending any more.
    async fn accept_invitation(
        &self,
        invitation: &Invitation,
        user: &User,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Stores a person's password hash (an Argon2id PHC string).
    async fn set_user_password(
        &self,
        user_id: UserId,
        password_hash: &str,
    ) -> Result<(), StoreError>;

    /// Writes a membership's role and status, with its audit events. False when it is gone.
    async fn update_membership(
        &self,
        membership: &Membership,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Applies `changes` to an API key, with their audit events, and returns the key as it is
    /// now; `None` when it is gone. The row is locked for the change, and only the given fields
    /// are written. A secret change also ends the refresh-token families of older secrets.
    async fn update_api_key(
        &self,
        id: ApiKeyId,
        changes: &ApiKeyChanges,
        events: &[AuditEvent],
    ) -> Result<Option<ApiKey>, StoreError>;

    /// Stores a new organization with its audit events.
    async fn create_organization(
        &self,
        organization: &Organization,
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// Writes an organization's mutable fields (everything but id, manager and creation), with
    /// its audit events. With `expected`, only while the stored organization still equals it
    /// (the copy the change was made from), under its row lock: two changes made from the same
    /// copy cannot overwrite each other. False when it is gone or, with `expected`, changed.
    async fn update_organization(
        &self,
        organization: &Organization,
        expected: Option<&Organization>,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Adds `env` to an organization's envs, under its row lock and reading it in the same
    /// transaction, writing only the envs (with `events` when they changed): it cannot conflict
    /// with a change of other fields. The organization as it is now; `None` when it is gone.
    async fn enable_organization_env(
        &self,
        id: OrganizationId,
        env: Env,
        events: &[AuditEvent],
    ) -> Result<Option<Organization>, StoreError>;

    /// One page of `root` and every organization it manages, transitively, and how many match.
    async fn list_organizations(
        &self,
        root: OrganizationId,
        query: &OrganizationQuery,
    ) -> Result<Page<Organization>, StoreError>;

    /// Deletes an organization with its keys, refresh tokens, memberships and invitations, and
    /// writes its audit events. Refuses while it manages organizations.
    async fn delete_organization(
        &self,
        id: OrganizationId,
        events: &[AuditEvent],
    ) -> Result<OrganizationDeletion, StoreError>;

    /// Stores a new API key with its audit events; [`StoreError::Conflict`] when the name is
    /// taken in its organization.
    async fn create_api_key(&self, key: &ApiKey, events: &[AuditEvent]) -> Result<(), StoreError>;

    async fn api_key_by_name(
        &self,
        organization_id: OrganizationId,
        name: &str,
    ) -> Result<Option<ApiKey>, StoreError>;

    /// One page of an organization's keys and the number of keys that match the filters.
    async fn list_api_keys(
        &self,
        organization_id: OrganizationId,
        query: &ApiKeyQuery,
    ) -> Result<Page<ApiKey>, StoreError>;

    /// Records when keys last obtained a token (batched; never moves a time backwards).
    async fn touch_api_keys(&self, used: &[(ApiKeyId, i64)]) -> Result<(), StoreError>;

    /// Deletes an API key and its refresh tokens, with its audit events. False when it was gone
    /// (or, with `only_if_role`, holds another role now).
    async fn delete_api_key(
        &self,
        id: ApiKeyId,
        only_if_role: Option<Role>,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Stores new refresh tokens, each with the audit events of the login or refresh that
    /// issued it, in one transaction (a group commit: one disk flush for many logins). Where an
    /// issue has `spend_parent`, that token is marked used in the same transaction, and nothing
    /// of that issue is stored (false at its index) when the parent was already used or revoked:
    /// of concurrent presentations of one token exactly one succeeds, within a batch too.
    async fn issue_refresh_tokens(&self, batch: &[RefreshIssue]) -> Result<Vec<bool>, StoreError>;

    /// [`Store::issue_refresh_tokens`] for one token.
    async fn issue_refresh_token(&self, issue: &RefreshIssue) -> Result<bool, StoreError> {
        let stored = self
            .issue_refresh_tokens(std::slice::from_ref(issue))
            .await?;
        Ok(stored.first().copied().unwrap_or(false))
    }

    /// A refresh token by its id, the selector its plain value starts with.
    async fn refresh_token(&self, id: &str) -> Result<Option<RefreshToken>, StoreError>;

    /// Revokes every token of a family (reuse detected, logout), with its audit events.
    async fn revoke_refresh_family(
        &self,
        family_id: &str,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// Stores a new console session with the audit events of its sign-in; in the same
    /// transaction, deletes every session that ended (seen before the first bound, or begun
    /// before the second).
    async fn create_console_session(
        &self,
        session: &ConsoleSession,
        expired: (i64, i64),
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// A console session by the keyed hash of its id.
    async fn console_session(
        &self,
        id_hash: &CredentialHash,
    ) -> Result<Option<ConsoleSession>, StoreError>;

    /// Records that a console session was seen at `now`.
    async fn touch_console_session(
        &self,
        id_hash: &CredentialHash,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Points a console session at another organization, with the person's token version
    /// there; false when the session is gone.
    async fn switch_console_session(
        &self,
        id_hash: &CredentialHash,
        organization_id: OrganizationId,
        token_version: i64,
    ) -> Result<bool, StoreError>;

    /// Ends one console session; false when it had ended already.
    async fn delete_console_session(&self, id_hash: &CredentialHash) -> Result<bool, StoreError>;

    /// Ends every console session of a person, with its audit events; how many there were.
    async fn delete_console_sessions_of_user(
        &self,
        user_id: UserId,
        events: &[AuditEvent],
    ) -> Result<u64, StoreError>;

    /// Stores a person's password reset link, replacing their earlier one unless that was made
    /// after `not_since`; false when refused.
    async fn offer_password_reset(
        &self,
        reset: &PasswordReset,
        not_since: i64,
    ) -> Result<bool, StoreError>;

    /// An unused password reset link by the keyed hash of its token.
    async fn password_reset(
        &self,
        token_hash: &CredentialHash,
    ) -> Result<Option<PasswordReset>, StoreError>;

    /// Spends a reset link and, in the same transaction, sets the person's password hash, ends
    /// their console sessions, revokes their refresh tokens and writes `events`; false when it
    /// was spent, replaced or expired.
    async fn redeem_password_reset(
        &self,
        token_hash: &CredentialHash,
        user_id: UserId,
        now: i64,
        password_hash: &str,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError>;

    /// Sets a person's password hash, ends every console session of theirs but `keep` and
    /// revokes their refresh tokens as of `now`, with `events`, in one transaction.
    async fn change_password(
        &self,
        user_id: UserId,
        now: i64,
        password_hash: &str,
        keep: &CredentialHash,
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// Records audit events that accompany no other change (e.g. a failed login).
    async fn record_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError>;

    /// Claims an idempotency record for a request (one atomic insert, so of concurrent requests
    /// with one key, on any node, exactly one gets [`ClaimOutcome::Claimed`]); otherwise what the
    /// record holds. An expired record, or a running claim made before `stale_before`, is taken
    /// over as if absent.
    async fn claim_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Keeps the answer of the request holding `claim`, until `expires_at`. False when that
    /// claim is no longer the record's.
    async fn complete_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
        answer: &KeptAnswer,
        expires_at: i64,
    ) -> Result<bool, StoreError>;

    /// Renews the lease of the running record `claim` holds to `now`. False when that claim is
    /// no longer the record's.
    async fn renew_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Deletes the running record `claim` holds (its answer is not kept: a retry runs again).
    async fn release_idempotency_key(&self, claim: &IdempotencyClaim) -> Result<(), StoreError>;

    /// Deletes up to `limit` idempotency records expired at `now`; how many.
    async fn purge_idempotency_keys(&self, now: i64, limit: i64) -> Result<u64, StoreError>;

    /// Closes every connection; used on shutdown.
    async fn close(&self);
}
