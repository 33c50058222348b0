//! What the audit log records: every action name, in one place.

/// An action an audit event records. Its name (`as_str`) is what the store keeps and the API
/// shows, e.g. `api_key.rotated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    OrganizationCreated,
    OrganizationUpdated,
    OrganizationEnvEnabled,
    OrganizationDeleted,
    ApiKeyCreated,
    ApiKeyUpdated,
    ApiKeyEnabled,
    ApiKeyDisabled,
    ApiKeyRotated,
    ApiKeyDeleted,
    UserInvited,
    UserUpdated,
    UserRemoved,
    InvitationAccepted,
    InvitationResent,
    InvitationRevoked,
    OwnerRecovered,
    AuthSucceeded,
    AuthFailed,
    TokenRefreshed,
    TokenRevoked,
    TokenReuseDetected,
    PasswordReset,
    PasswordChanged,
    SignedOut,
    SignedOutEverywhere,
}

impl AuditAction {
    pub const ALL: [AuditAction; 26] = [
        AuditAction::OrganizationCreated,
        AuditAction::OrganizationUpdated,
        AuditAction::OrganizationEnvEnabled,
        AuditAction::OrganizationDeleted,
        AuditAction::ApiKeyCreated,
        AuditAction::ApiKeyUpdated,
        AuditAction::ApiKeyEnabled,
        AuditAction::ApiKeyDisabled,
        AuditAction::ApiKeyRotated,
        AuditAction::ApiKeyDeleted,
        AuditAction::UserInvited,
        AuditAction::UserUpdated,
        AuditAction::UserRemoved,
        AuditAction::InvitationAccepted,
        AuditAction::InvitationResent,
        AuditAction::InvitationRevoked,
        AuditAction::OwnerRecovered,
        AuditAction::AuthSucceeded,
        AuditAction::AuthFailed,
        AuditAction::TokenRefreshed,
        AuditAction::TokenRevoked,
        AuditAction::TokenReuseDetected,
        AuditAction::PasswordReset,
        AuditAction::PasswordChanged,
        AuditAction::SignedOut,
        AuditAction::SignedOutEverywhere,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::OrganizationCreated => "organization.created",
            AuditAction::OrganizationUpdated => "organization.updated",
            AuditAction::OrganizationEnvEnabled => "organization.env_enabled",
            AuditAction::OrganizationDeleted => "organization.deleted",
            AuditAction::ApiKeyCreated => "api_key.created",
            AuditAction::ApiKeyUpdated => "api_key.updated",
            AuditAction::ApiKeyEnabled => "api_key.enabled",
            AuditAction::ApiKeyDisabled => "api_key.disabled",
            AuditAction::ApiKeyRotated => "api_key.rotated",
            AuditAction::ApiKeyDeleted => "api_key.deleted",
            AuditAction::UserInvited => "user.invited",
            AuditAction::UserUpdated => "user.updated",
            AuditAction::UserRemoved => "user.removed",
            AuditAction::InvitationAccepted => "invitation.accepted",
            AuditAction::InvitationResent => "invitation.resent",
            AuditAction::InvitationRevoked => "invitation.revoked",
            AuditAction::OwnerRecovered => "owner.recovered",
            AuditAction::AuthSucceeded => "auth.succeeded",
            AuditAction::AuthFailed => "auth.failed",
            AuditAction::TokenRefreshed => "token.refreshed",
            AuditAction::TokenRevoked => "token.revoked",
            AuditAction::TokenReuseDetected => "token.reuse_detected",
            AuditAction::PasswordReset => "user.password_reset",
            AuditAction::PasswordChanged => "user.password_changed",
            AuditAction::SignedOut => "user.signed_out",
            AuditAction::SignedOutEverywhere => "user.signed_out_everywhere",
        }
    }

    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    #[test]
    fn every_action_has_its_own_name_and_parses_back() {
        let mut names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuditAction::ALL.len());
        assert_eq!(AuditAction::parse("api_key.exploded"), None);
    }
}
