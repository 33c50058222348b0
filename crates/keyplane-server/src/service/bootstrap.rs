//! `keyplane bootstrap`: the first organization, its owner and a first API key, on an empty store.

use keyplane_core::ValidationError;
use keyplane_core::audit::AuditAction;
use keyplane_core::onboarding::{DEFAULT_INVITATION_TTL_SECONDS, plan_bootstrap};
use keyplane_core::secrets::{PlainCredential, ServerSecrets};
use keyplane_core::time::now_unix;
use keyplane_core::values::{Email, OrganizationName};
use keyplane_store::{Bootstrap, Store, StoreError};
use serde::Serialize;

/// What bootstrap prints: the credentials, once.
#[derive(Debug, Serialize)]
pub struct BootstrapOutput {
    pub organization_id: String,
    pub user_id: String,
    pub api_key: String,
    pub api_secret: String,
    pub invitation_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("this store already has an organization; nothing was changed")]
    AlreadyBootstrapped,
    #[error("{0}")]
    Store(StoreError),
}

/// The first organization's address, each part optional: an organization's address is
/// required on create, but the first one comes from the operator's command line and may be
/// completed later (`PATCH /api/v0/organizations/{id}`). Until then those fields are absent.
#[derive(Clone, Debug, Default)]
pub struct Address {
    pub address_line1: Option<String>,
    pub zip: Option<String>,
    pub town: Option<String>,
    /// ISO 3166-1 alpha-3, e.g. `DEU`.
    pub country_code: Option<String>,
}

pub async fn bootstrap(
    store: &dyn Store,
    secrets: &ServerSecrets,
    organization_name: &str,
    email: &str,
    address: Address,
    public_url: &str,
) -> Result<BootstrapOutput, BootstrapError> {
    create_first(
        store,
        secrets,
        organization_name,
        email,
        address,
        public_url,
    )
    .await
    .map(|(output, _)| output)
}

/// What [`bootstrap`] does, also returning the owner's invitation token.
pub(crate) async fn create_first(
    store: &dyn Store,
    secrets: &ServerSecrets,
    organization_name: &str,
    email: &str,
    address: Address,
    public_url: &str,
) -> Result<(BootstrapOutput, PlainCredential), BootstrapError> {
    let name = OrganizationName::parse(organization_name)?;
    let email = Email::parse(email)?;
    let mut plan = plan_bootstrap(
        secrets,
        name,
        email,
        now_unix(),
        DEFAULT_INVITATION_TTL_SECONDS,
    );
    // The same rules as any organization's fields.
    keyplane_core::organizations::update(
        &mut plan.organization,
        keyplane_core::organizations::OrganizationFields {
            address_line1: address.address_line1,
            zip: address.zip,
            town: address.town,
            country_code: address.country_code,
            ..Default::default()
        },
    )?;
    let records = Bootstrap {
        organization: plan.organization,
        user: plan.user,
        membership: plan.membership,
        invitation: plan.invitation,
        api_key: plan.api_key,
        events: plan.events,
    };
    store
        .bootstrap(&records)
        .await
        .map_err(|error| match error {
            StoreError::AlreadyBootstrapped => BootstrapError::AlreadyBootstrapped,
            other => BootstrapError::Store(other),
        })?;
    let output = BootstrapOutput {
        organization_id: records.organization.id.to_string(),
        user_id: records.user.id.to_string(),
        api_key: records.api_key.public_key,
        api_secret: plan.api_secret.into_string(),
        invitation_url: invitation_url(public_url, &plan.invitation_token),
    };
    Ok((output, plan.invitation_token))
}

/// The link an invitation mails. The token travels in the fragment, which browsers never send to
/// a server, so it reaches no access log; the page posts it to `POST /api/v0/invitations/accept`.
pub fn invitation_url(public_url: &str, token: &keyplane_core::secrets::PlainCredential) -> String {
    format!(
        "{}/accept-invitation#token={}",
        public_url.trim_end_matches('/'),
        token.expose()
    )
}

/// What `keyplane admin recover-owner` prints: the new owner invitation's link, once.
#[derive(Debug, Serialize)]
pub struct RecoveryOutput {
    pub organization_id: String,
    pub user_id: String,
    pub invitation_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("no organization has this id")]
    OrganizationNotFound,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The operator's way back into an organization nobody can sign in to (its owners gone,
/// disabled, or their invitations revoked): a new owner invitation for `email`, made on the
/// server's host with the store settings. The person becomes an owner when they accept; one
/// who already was an active member stays active and gets a new password by accepting.
pub async fn recover_owner(
    store: &dyn Store,
    secrets: &ServerSecrets,
    organization_id: &str,
    email: &str,
    public_url: &str,
) -> Result<RecoveryOutput, RecoveryError> {
    use keyplane_core::records::{AuditEvent, Invitation, User};
    use keyplane_core::secrets::{CredentialKind, PlainCredential};
    use keyplane_core::{InvitationId, OrganizationId};

    let organization_id: OrganizationId = organization_id
        .parse()
        .map_err(|_| ValidationError::new("organization", "must be an organization id (UUID)"))?;
    let email = Email::parse(email)?;
    if store.organization(organization_id).await?.is_none() {
        return Err(RecoveryError::OrganizationNotFound);
    }
    let now = now_unix();
    let existing = store.user_by_email(email.as_str()).await?;
    let new_user = existing
        .is_none()
        .then(|| User::new(email, None, None, now));
    let user_id = existing
        .as_ref()
        .or(new_user.as_ref())
        .map(|user| user.id)
        .expect("one of them exists");
    let token = PlainCredential::generate();
    let invitation = Invitation {
        id: InvitationId::new(),
        organization_id,
        user_id,
        token_hash: secrets.hash_credential(CredentialKind::InvitationToken, token.expose()),
        invited_by: None,
        created_at: now,
        expires_at: now + DEFAULT_INVITATION_TTL_SECONDS,
        accepted_at: None,
        revoked_at: None,
    };
    let event = AuditEvent::system(
        organization_id,
        AuditAction::OwnerRecovered,
        "user",
        user_id.to_string(),
        now,
    );
    if !store
        .grant_owner_invitation(new_user.as_ref(), &invitation, &[event])
        .await?
    {
        return Err(RecoveryError::OrganizationNotFound);
    }
    Ok(RecoveryOutput {
        organization_id: organization_id.to_string(),
        user_id: user_id.to_string(),
        invitation_url: invitation_url(public_url, &token),
    })
}
