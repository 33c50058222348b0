//! A deadline around every operation of a store whose database is across a network: when the
//! network goes silent mid-statement, neither the database's own timeouts nor the connection's
//! (sqlx sets no TCP keepalive or user timeout) reach this side, and a request would wait for as
//! long as the silence lasts. Past the deadline the operation is dropped — its connection with
//! it, so it is not reused — and the caller gets `Unavailable`.

use std::time::Duration;

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

use crate::{Bootstrap, OrganizationDeletion, Store, StoreError};

/// `S` with every operation bounded by `deadline`.
pub struct Bounded<S> {
    inner: S,
    deadline: Duration,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, deadline: Duration) -> Self {
        Self { inner, deadline }
    }

    async fn within<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.deadline, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::unavailable(
                    "the database did not answer in time",
                ))
            })
    }
}

/// Each operation is the inner store's, within the deadline; `engine` and `close` are not
/// bounded (`issue_refresh_token` is, through `issue_refresh_tokens`).
#[async_trait]
impl<S: Store> Store for Bounded<S> {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    async fn close(&self) {
        self.inner.close().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.within(self.inner.ping()).await
    }

    async fn claim_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
    ) -> Result<ClaimOutcome, StoreError> {
        self.within(self.inner.claim_idempotency_key(claim)).await
    }

    async fn complete_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
        answer: &KeptAnswer,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.within(
            self.inner
                .complete_idempotency_key(claim, answer, expires_at),
        )
        .await
    }

    async fn renew_idempotency_key(
        &self,
        claim: &IdempotencyClaim,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.within(self.inner.renew_idempotency_key(claim, now))
            .await
    }

    async fn release_idempotency_key(&self, claim: &IdempotencyClaim) -> Result<(), StoreError> {
        self.within(self.inner.release_idempotency_key(claim)).await
    }

    async fn purge_idempotency_keys(&self, now: i64, limit: i64) -> Result<u64, StoreError> {
        self.within(self.inner.purge_idempotency_keys(now, limit))
            .await
    }

    async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
        self.within(self.inner.probe_write(now)).await
    }

    async fn has_organizations(&self) -> Result<bool, StoreError> {
        self.within(self.inner.has_organizations()).await
    }

    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<(), StoreError> {
        self.within(self.inner.bootstrap(bootstrap)).await
    }

    async fn organization(&self, id: OrganizationId) -> Result<Option<Organization>, StoreError> {
        self.within(self.inner.organization(id)).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.within(self.inner.user(id)).await
    }

    async fn memberships_of_user(&self, user_id: UserId) -> Result<Vec<Membership>, StoreError> {
        self.within(self.inner.memberships_of_user(user_id)).await
    }

    async fn invitations_of_organization(
        &self,
        organization_id: OrganizationId,
    ) -> Result<Vec<Invitation>, StoreError> {
        self.within(self.inner.invitations_of_organization(organization_id))
            .await
    }

    async fn api_key_by_public_key(&self, public_key: &str) -> Result<Option<ApiKey>, StoreError> {
        self.within(self.inner.api_key_by_public_key(public_key))
            .await
    }

    async fn audit_events(
        &self,
        organization_id: OrganizationId,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.within(self.inner.audit_events(organization_id)).await
    }

    async fn list_audit_events(
        &self,
        organization_id: OrganizationId,
        query: &AuditQuery,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.within(self.inner.list_audit_events(organization_id, query))
            .await
    }

    async fn api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        self.within(self.inner.api_key(id)).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.within(self.inner.signing_keys()).await
    }

    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.within(self.inner.insert_signing_key(key)).await
    }

    async fn rotate_signing_key(
        &self,
        new: &StoredSigningKey,
        retire_at: i64,
        expected_newest: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.within(
            self.inner
                .rotate_signing_key(new, retire_at, expected_newest),
        )
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.within(self.inner.user_by_email(email)).await
    }

    async fn membership(
        &self,
        organization_id: OrganizationId,
        user_id: UserId,
    ) -> Result<Option<Membership>, StoreError> {
        self.within(self.inner.membership(organization_id, user_id))
            .await
    }

    async fn list_users(
        &self,
        organization_id: OrganizationId,
        query: &UserQuery,
    ) -> Result<Page<(User, Membership)>, StoreError> {
        self.within(self.inner.list_users(organization_id, query))
            .await
    }

    async fn invite(
        &self,
        new_user: Option<&User>,
        membership: &Membership,
        invitation: &Invitation,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        self.within(self.inner.invite(new_user, membership, invitation, events))
            .await
    }

    async fn grant_owner_invitation(
        &self,
        new_user: Option<&User>,
        invitation: &Invitation,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(
            self.inner
                .grant_owner_invitation(new_user, invitation, events),
        )
        .await
    }

    async fn change_membership(
        &self,
        expected: &Membership,
        changed: &Membership,
        events: &[AuditEvent],
    ) -> Result<MembershipOutcome, StoreError> {
        self.within(self.inner.change_membership(expected, changed, events))
            .await
    }

    async fn remove_membership(
        &self,
        expected: &Membership,
        events: &[AuditEvent],
    ) -> Result<MembershipOutcome, StoreError> {
        self.within(self.inner.remove_membership(expected, events))
            .await
    }

    async fn pending_invitations(
        &self,
        organization_id: OrganizationId,
        now: i64,
        listing: &InvitationQuery,
    ) -> Result<Page<PendingInvitation>, StoreError> {
        self.within(
            self.inner
                .pending_invitations(organization_id, now, listing),
        )
        .await
    }

    async fn invitation(&self, id: InvitationId) -> Result<Option<Invitation>, StoreError> {
        self.within(self.inner.invitation(id)).await
    }

    async fn invitation_by_hash(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<Invitation>, StoreError> {
        self.within(self.inner.invitation_by_hash(hash)).await
    }

    async fn renew_invitation(
        &self,
        invitation: &Invitation,
        offered: Role,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(self.inner.renew_invitation(invitation, offered, events))
            .await
    }

    async fn revoke_invitation(
        &self,
        id: InvitationId,
        offered: Role,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(self.inner.revoke_invitation(id, offered, now, events))
            .await
    }

    async fn accept_invitation(
        &self,
        invitation: &Invitation,
        user: &User,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(self.inner.accept_invitation(invitation, user, now, events))
            .await
    }

    async fn set_user_password(
        &self,
        user_id: UserId,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        self.within(self.inner.set_user_password(user_id, password_hash))
            .await
    }

    async fn update_membership(
        &self,
        membership: &Membership,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(self.inner.update_membership(membership, events))
            .await
    }

    async fn update_api_key(
        &self,
        id: ApiKeyId,
        changes: &ApiKeyChanges,
        events: &[AuditEvent],
    ) -> Result<Option<ApiKey>, StoreError> {
        self.within(self.inner.update_api_key(id, changes, events))
            .await
    }

    async fn create_organization(
        &self,
        organization: &Organization,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        self.within(self.inner.create_organization(organization, events))
            .await
    }

    async fn update_organization(
        &self,
        organization: &Organization,
        expected: Option<&Organization>,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(
            self.inner
                .update_organization(organization, expected, events),
        )
        .await
    }

    async fn enable_organization_env(
        &self,
        id: OrganizationId,
        env: Env,
        events: &[AuditEvent],
    ) -> Result<Option<Organization>, StoreError> {
        self.within(self.inner.enable_organization_env(id, env, events))
            .await
    }

    async fn list_organizations(
        &self,
        root: OrganizationId,
        query: &OrganizationQuery,
    ) -> Result<Page<Organization>, StoreError> {
        self.within(self.inner.list_organizations(root, query))
            .await
    }

    async fn delete_organization(
        &self,
        id: OrganizationId,
        events: &[AuditEvent],
    ) -> Result<OrganizationDeletion, StoreError> {
        self.within(self.inner.delete_organization(id, events))
            .await
    }

    async fn create_api_key(&self, key: &ApiKey, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.within(self.inner.create_api_key(key, events)).await
    }

    async fn api_key_by_name(
        &self,
        organization_id: OrganizationId,
        name: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        self.within(self.inner.api_key_by_name(organization_id, name))
            .await
    }

    async fn list_api_keys(
        &self,
        organization_id: OrganizationId,
        query: &ApiKeyQuery,
    ) -> Result<Page<ApiKey>, StoreError> {
        self.within(self.inner.list_api_keys(organization_id, query))
            .await
    }

    async fn touch_api_keys(&self, used: &[(ApiKeyId, i64)]) -> Result<(), StoreError> {
        self.within(self.inner.touch_api_keys(used)).await
    }

    async fn delete_api_key(
        &self,
        id: ApiKeyId,
        only_if_role: Option<Role>,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(self.inner.delete_api_key(id, only_if_role, events))
            .await
    }

    async fn issue_refresh_tokens(&self, batch: &[RefreshIssue]) -> Result<Vec<bool>, StoreError> {
        self.within(self.inner.issue_refresh_tokens(batch)).await
    }

    async fn refresh_token(&self, id: &str) -> Result<Option<RefreshToken>, StoreError> {
        self.within(self.inner.refresh_token(id)).await
    }

    async fn revoke_refresh_family(
        &self,
        family_id: &str,
        now: i64,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        self.within(self.inner.revoke_refresh_family(family_id, now, events))
            .await
    }

    async fn create_console_session(
        &self,
        session: &ConsoleSession,
        expired: (i64, i64),
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        self.within(self.inner.create_console_session(session, expired, events))
            .await
    }

    async fn console_session(
        &self,
        id_hash: &CredentialHash,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        self.within(self.inner.console_session(id_hash)).await
    }

    async fn touch_console_session(
        &self,
        id_hash: &CredentialHash,
        now: i64,
    ) -> Result<(), StoreError> {
        self.within(self.inner.touch_console_session(id_hash, now))
            .await
    }

    async fn switch_console_session(
        &self,
        id_hash: &CredentialHash,
        organization_id: OrganizationId,
        token_version: i64,
    ) -> Result<bool, StoreError> {
        self.within(
            self.inner
                .switch_console_session(id_hash, organization_id, token_version),
        )
        .await
    }

    async fn delete_console_session(&self, id_hash: &CredentialHash) -> Result<bool, StoreError> {
        self.within(self.inner.delete_console_session(id_hash))
            .await
    }

    async fn delete_console_sessions_of_user(
        &self,
        user_id: UserId,
        events: &[AuditEvent],
    ) -> Result<u64, StoreError> {
        self.within(self.inner.delete_console_sessions_of_user(user_id, events))
            .await
    }

    async fn offer_password_reset(
        &self,
        reset: &PasswordReset,
        not_since: i64,
    ) -> Result<bool, StoreError> {
        self.within(self.inner.offer_password_reset(reset, not_since))
            .await
    }

    async fn password_reset(
        &self,
        token_hash: &CredentialHash,
    ) -> Result<Option<PasswordReset>, StoreError> {
        self.within(self.inner.password_reset(token_hash)).await
    }

    async fn redeem_password_reset(
        &self,
        token_hash: &CredentialHash,
        user_id: UserId,
        now: i64,
        password_hash: &str,
        events: &[AuditEvent],
    ) -> Result<bool, StoreError> {
        self.within(self.inner.redeem_password_reset(
            token_hash,
            user_id,
            now,
            password_hash,
            events,
        ))
        .await
    }

    async fn change_password(
        &self,
        user_id: UserId,
        now: i64,
        password_hash: &str,
        keep: &CredentialHash,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        self.within(
            self.inner
                .change_password(user_id, now, password_hash, keep, events),
        )
        .await
    }

    async fn record_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.within(self.inner.record_audit_events(events)).await
    }
}
