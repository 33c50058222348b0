//! The [`Store`] trait for every [`Backend`]: each operation is the function of the same name in
//! the module of its table(s), where its SQL is, run on the store's connections. Nothing here
//! touches a table; this is the one place that maps the facade the server uses onto those
//! modules, for both engines at once.

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

use crate::engine::{Backend, Engine};
use crate::{
    Bootstrap, OrganizationDeletion, Store, StoreError, api_keys, audit, bootstrap, idempotency,
    invitations, organizations, people, refresh_tokens, sessions, signing_keys,
};

#[async_trait]
impl<B: Backend> Store for B {
    fn engine(&self) -> &'static str {
        B::Engine::NAME
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bootstrap::ping(self).await
    }

    async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
        bootstrap::probe_write(self, now).await
    }

    async fn has_organizations(&self) -> Result<bool, StoreError> {
        bootstrap::has_organizations(self).await
    }

    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<(), StoreError> {
        bootstrap::bootstrap(self, bootstrap).await
    }

    async fn organization(&self, id: OrganizationId) -> Result<Option<Organization>, StoreError> {
        organizations::organization(self, id).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        people::user(self, id).await
    }

    async fn memberships_of_user(&self, user_id: UserId) -> Result<Vec<Membership>, StoreError> {
        people::memberships_of_user(self, user_id).await
    }

    async fn invitations_of_organization(
        &self,
        organization_id: OrganizationId,
    ) -> Result<Vec<Invitation>, StoreError> {
        invitations::invitations_of_organization(self, organization_id).await
    }

    async fn api_key_by_public_key(&self, public_key: &str) -> Result<Option<ApiKey>, StoreError> {
        api_keys::api_key_by_public_key(self, public_key).await
    }

    async fn audit_events(
        &self,
        organization_id: OrganizationId,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        audit::audit_events(self, organization_id).await
    }

    async fn list_audit_events(
        &self,
        organization_id: OrganizationId,
        query: &AuditQuery,
    ) -> Result<Page<AuditEvent>, StoreError> {
        audit::list_audit_events(self, organization_id, query).await
    }

    async fn api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        api_keys::api_key(self, id).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        signing_keys::signing_keys(self).await
    }

    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        signing_keys::insert_signing_key(self, key).await
    }

    async fn rotate_signing_key(
        &self,
        new: &StoredSigningKey,
        retire_at: i64,
        expected_newest: Option<&str>,
    ) -> Result<bool, StoreError> {
        signing_keys::rotate_signing_key(self, new, retire_at, expected_newest).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        people::user_by_email(self, email).await
    }

    async fn membership(
        &self,
        organization_id: OrganizationId,
        user_id: UserId,
    ) -> Result<Option<Membership>, StoreError> {
        people::membership(self, organization_id, user_id).await
    }

    async fn list_users(
        &self,
        organization_id: OrganizationId,
        query: &UserQuery,
    ) -> Result<Page<(User, Membership)>, StoreError> {
        people::list_users(self, organization_id, query).await
    }

    async fn invite(
        &self,
        new_user: Option<&User>,
        membership: &Membership,
        invitation: &Invitation,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        invitations::invite(self, new_user, membership, invitation, events).await
    }

    async fn grant_owner_invitation(
        &self,
        new_user: Option<&User>,
        invitation: &Invitation,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        invitations::grant_owner_invitation(self, new_user, invitation, events).await
    }

    async fn change_membership(
        &self,
        expected: &Membership,
        changed: &Membership,
        events: &[AuditEvent],
    ) -> Result<MembershipOutcome, StoreError> {
        people::change_membership(self, expected, changed, events).await
    }

    async fn remove_membership(
        &self,
        expected: &Membership,
        events: &[AuditEvent],
    ) -> Result<MembershipOutcome, StoreError> {
        people::remove_membership(self, expected, events).await
    }

    async fn pending_invitations(
        &self,
        organization_id: OrganizationId,
        now: i64,
        listing: &InvitationQuery,
    ) -> Result<Page<PendingInvitation>, StoreError> {
        invitations::pending_invitations(self, organization_id, now, listing).await
    }

    async fn invitation(&self, id: InvitationId) -> Result<Option<Invitation>, StoreError> {
        invitations::invitation(self, id).await
    }

    async fn invitation_by_hash(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<Invitation>, StoreError> {
        invitations::invitation_by_hash(self, hash).await
    }

    async fn renew_invitation(
        &self,
        invitation: &Invitation,
        offered: Role,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        invitations::renew_invitation(self, invitation, offered, events).await
    }

    async fn revoke_invitation(
        &self,
        id: InvitationId,
        offered: Role,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        invitations::revoke_invitation(self, id, offered, now, events).await
    }

    async fn accept_invitation(
        &self,
        invitation: &Invitation,
        user: &User,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        invitations::accept_invitation(self, invitation, user, now, events).await
    }

    async fn set_user_password(
        &self,
        user_id: UserId,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        people::set_user_password(self, user_id, password_hash).await
    }

    async fn update_membership(
        &self,
        membership: &Membership,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        people::update_membership(self, membership, events).await
    }

    async fn update_api_key(
        &self,
        id: ApiKeyId,
        changes: &ApiKeyChanges,
        events: &[AuditEvent],
    ) -> Result<Option<ApiKey>, StoreError> {
        api_keys::update_api_key(self, id, changes, events).await
    }

    async fn create_organization(
        &self,
        organization: &Organization,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        organizations::create_organization(self, organization, events).await
    }

    async fn update_organization(
        &self,
        organization: &Organization,
        expected: Option<&Organization>,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        organizations::update_organization(self, organization, expected, events).await
    }

    async fn enable_organization_env(
        &self,
        id: OrganizationId,
        env: Env,
        events: &[AuditEvent],
    ) -> Result<Option<Organization>, StoreError> {
        organizations::enable_organization_env(self, id, env, events).await
    }

    async fn list_organizations(
        &self,
        root: OrganizationId,
        query: &OrganizationQuery,
    ) -> Result<Page<Organization>, StoreError> {
        organizations::list_organizations(self, root, query).await
    }

    async fn delete_organization(
        &self,
        id: OrganizationId,
        events: &[AuditEvent],
    ) -> Result<OrganizationDeletion, StoreError> {
        organizations::delete_organization(self, id, events).await
    }

    async fn create_api_key(&self, key: &ApiKey, events: &[AuditEvent]) -> Result<(), StoreError> {
        api_keys::create_api_key(self, key, events).await
    }

    async fn api_key_by_name(
        &self,
        organization_id: OrganizationId,
        name: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        api_keys::api_key_by_name(self, organization_id, name).await
    }

    async fn list_api_keys(
        &self,
        organization_id: OrganizationId,
        query: &ApiKeyQuery,
    ) -> Result<Page<ApiKey>, StoreError> {
        api_keys::list_api_keys(self, organization_id, query).await
    }

    async fn touch_api_keys(&self, used: &[(ApiKeyId, i64)]) -> Result<(), StoreError> {
        api_keys::touch_api_keys(self, used).await
    }

    async fn delete_api_key(
        &self,
        id: ApiKeyId,
        only_if_role: Option<Role>,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        api_keys::delete_api_key(self, id, only_if_role, events).await
    }

    async fn issue_refresh_tokens(&self, batch: &[RefreshIssue]) -> Result<Vec<bool>, StoreError> {
        refresh_tokens::issue_refresh_tokens(self, batch).await
    }

    async fn refresh_token(&self, id: &str) -> Result<Option<RefreshToken>, StoreError> {
        refresh_tokens::refresh_token(self, id).await
    }

    async fn revoke_refresh_family(
        &self,
        family_id: &str,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        refresh_tokens::revoke_refresh_family(self, family_id, now, events).await
    }

    async fn create_console_session(
        &self,
        session: &ConsoleSession,
        expired: (i64, i64),
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        sessions::create_console_session(self, session, expired, events).await
    }

    async fn console_session(
        &self,
        id_hash: &CredentialHash,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        sessions::console_session(self, id_hash).await
    }

    async fn touch_console_session(
        &self,
        id_hash: &CredentialHash,
        now: i64,
    ) -> Result<(), StoreError> {
        sessions::touch_console_session(self, id_hash, now).await
    }

    async fn switch_console_session(
        &self,
        id_hash: &CredentialHash,
        organization_id: OrganizationId,
        token_version: i64,
    ) -> Result<bool, StoreError> {
        sessions::switch_console_session(self, id_hash, organization_id, token_version).await
    }

    async fn delete_console_session(&self, id_hash: &CredentialHash) -> Result<bool, StoreError> {
        sessions::delete_console_session(self, id_hash).await
    }

    async fn delete_console_sessions_of_user(
        &self,
        user_id: UserId,
        events: &[AuditEvent],
    ) -> Result<u64, StoreError> {
        sessions::delete_console_sessions_of_user(self, user_id, events).await
    }

    async fn offer_password_reset(
        &self,
        reset: &PasswordReset,
        not_since: i64,
    ) -> Result<bool, StoreError> {
        sessions::offer_password_reset(self, reset, not_since).await
    }

    async fn password_reset(
        &self,
        token_hash: &CredentialHash,
    ) -> Result<Option<PasswordReset>, StoreError> {
        sessions::password_reset(self, token_hash).await
    }

    async fn redeem_password_reset(
        &self,
        token_hash: &CredentialHash,
        user_id: UserId,
        now: i64,
        password_hash: &str,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        sessions::redeem_password_reset(self, token_hash, user_id, now, password_hash, events).await
    }

    async fn change_password(
        &self,
        user_id: UserId,
        now: i64,
        password_hash: &str,
        keep: &CredentialHash,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        sessions::change_password(self, user_id, now, password_hash, keep, events).await
    }

    async fn record_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        audit::record_audit_events(self, events).await
    }

    async fn claim_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
    ) -> Result<ClaimOutcome, StoreError> {
        idempotency::claim_idempotency_key(self, claim).await
    }

    async fn complete_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
        answer: &KeptAnswer,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        idempotency::complete_idempotency_key(self, claim, answer, expires_at).await
    }

    async fn renew_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
        now: i64,
    ) -> Result<bool, StoreError> {
        idempotency::renew_idempotency_key(self, claim, now).await
    }

    async fn release_idempotency_key(&self, claim: &IdempotencyClaim) -> Result<(), StoreError> {
        idempotency::release_idempotency_key(self, claim).await
    }

    async fn purge_idempotency_keys(&self, now: i64, limit: i64) -> Result<u64, StoreError> {
        idempotency::purge_idempotency_keys(self, now, limit).await
    }

    async fn close(&self) {
        self.close_connections().await;
    }
}
