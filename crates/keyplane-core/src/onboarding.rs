//! What `keyplane bootstrap` creates, assembled from validated input: the first organization, its
//! owner (invited, with no password yet), the owner's invitation and a first `test` API key.

use crate::audit::AuditAction;
use crate::ids::InvitationId;
use crate::records::{ApiKey, AuditEvent, Invitation, Membership, Metadata, Organization, User};
use crate::secrets::{CredentialKind, PlainCredential, ServerSecrets};
use crate::values::{
    ApiKeyKind, ApiKeyStatus, Email, Env, KeyName, OrganizationName, Role, UserStatus,
};

/// How long an invitation can be accepted, unless configured otherwise.
pub const DEFAULT_INVITATION_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// The name of the first API key.
pub const FIRST_API_KEY_NAME: &str = "bootstrap";

/// The records to store plus the credentials to show once.
#[derive(Debug)]
pub struct BootstrapPlan {
    pub organization: Organization,
    pub user: User,
    pub membership: Membership,
    pub invitation: Invitation,
    pub api_key: ApiKey,
    pub events: Vec<AuditEvent>,
    pub api_secret: PlainCredential,
    pub invitation_token: PlainCredential,
}

pub fn plan_bootstrap(
    secrets: &ServerSecrets,
    organization_name: OrganizationName,
    email: Email,
    now: i64,
    invitation_ttl_seconds: i64,
) -> BootstrapPlan {
    let mut organization = Organization::named(
        organization_name.to_string(),
        vec![Env::Test, Env::Live],
        now,
    );
    let user = User::new(email, None, None, now);
    // The first organization is credited to its first owner, like the first key.
    organization.created_by_user = Some(user.id);
    let membership = Membership {
        user_id: user.id,
        organization_id: organization.id,
        role: Role::Owner,
        status: UserStatus::Invited,
        created_at: now,
        token_version: Membership::fresh_token_version(),
        invited_first_name: None,
        invited_last_name: None,
    };
    let invitation_token = PlainCredential::generate();
    let invitation = Invitation {
        id: InvitationId::new(),
        organization_id: organization.id,
        user_id: user.id,
        token_hash: secrets
            .hash_credential(CredentialKind::InvitationToken, invitation_token.expose()),
        invited_by: None,
        created_at: now,
        expires_at: now + invitation_ttl_seconds,
        accepted_at: None,
        revoked_at: None,
    };
    let (api_key, api_secret) = crate::api_keys::create(
        crate::api_keys::NewApiKey {
            organization_id: organization.id,
            name: KeyName::parse(FIRST_API_KEY_NAME).expect("the first key's name is valid"),
            kind: ApiKeyKind::Test,
            status: ApiKeyStatus::Enabled,
            role: Role::Admin,
            metadata: Metadata::new(),
            expires_at: None,
            // The owner is the person the first key is made for.
            created_by_user: Some(user.id),
        },
        secrets,
        now,
    );
    let events = vec![
        AuditEvent::system(
            organization.id,
            AuditAction::OrganizationCreated,
            "organization",
            organization.id.to_string(),
            now,
        ),
        AuditEvent::system(
            organization.id,
            AuditAction::UserInvited,
            "user",
            user.id.to_string(),
            now,
        ),
        AuditEvent::system(
            organization.id,
            AuditAction::ApiKeyCreated,
            "api_key",
            api_key.id.to_string(),
            now,
        ),
    ];
    BootstrapPlan {
        organization,
        user,
        membership,
        invitation,
        api_key,
        events,
        api_secret,
        invitation_token,
    }
}
