//! `keyplane bootstrap`: the first organization, its owner and a first API key, on an empty store.

use keyplane_core::ValidationError;
use keyplane_core::onboarding::{DEFAULT_INVITATION_TTL_SECONDS, plan_bootstrap};
use keyplane_core::secrets::ServerSecrets;
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

pub async fn bootstrap(
    store: &dyn Store,
    secrets: &ServerSecrets,
    organization_name: &str,
    email: &str,
    public_url: &str,
) -> Result<BootstrapOutput, BootstrapError> {
    let name = OrganizationName::parse(organization_name)?;
    let email = Email::parse(email)?;
    let plan = plan_bootstrap(
        secrets,
        name,
        email,
        now_unix(),
        DEFAULT_INVITATION_TTL_SECONDS,
    );
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
    Ok(BootstrapOutput {
        organization_id: records.organization.id.to_string(),
        user_id: records.user.id.to_string(),
        api_key: records.api_key.public_key,
        api_secret: plan.api_secret.into_string(),
        invitation_url: invitation_url(public_url, &plan.invitation_token),
    })
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
