//! The records Keyplane keeps, as the domain sees them. The store persists exactly these; the HTTP
//! layer renders them into the wire shapes of the fiskaly-compatible API.

use serde::{Deserialize, Serialize};

use crate::audit::AuditAction;
use crate::ids::{ApiKeyId, AuditEventId, InvitationId, OrganizationId, UserId};
use crate::paging::{Listing, Position};
use crate::secrets::CredentialHash;
use crate::values::{ApiKeyKind, ApiKeyStatus, Email, Env, KeyName, Role, UserStatus};

/// Free-form metadata of organizations and API keys.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

#[derive(Clone, Debug, PartialEq)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub display_name: Option<String>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub zip: Option<String>,
    pub town: Option<String>,
    pub state: Option<String>,
    pub country_code: Option<String>,
    pub vat_id: Option<String>,
    pub tax_number: Option<String>,
    pub economy_id: Option<String>,
    pub contact_person_id: Option<String>,
    pub billing_address_id: Option<String>,
    pub metadata: Metadata,
    pub managed_by: Option<OrganizationId>,
    pub envs: Vec<Env>,
    pub created_at: i64,
    pub created_by_user: Option<UserId>,
}

impl User {
    /// A new person known only by their address, with a random id and no password until they
    /// accept an invitation.
    pub fn new(
        email: Email,
        first_name: Option<String>,
        last_name: Option<String>,
        now: i64,
    ) -> Self {
        Self {
            id: UserId::random(),
            email,
            first_name,
            last_name,
            password_hash: None,
            created_at: now,
        }
    }
}

impl Membership {
    /// Sets the status a caller asked for, where that is a change a caller may make: between
    /// active and disabled. Nobody sets a person invited, and an invited person becomes active
    /// only by accepting: a pending invitation is revoked, not disabled (a disabled one could
    /// be enabled into an active member who never accepted).
    pub fn change_status(&mut self, to: UserStatus) -> Result<(), crate::ValidationError> {
        match (self.status, to) {
            (_, UserStatus::Invited) => Err(crate::ValidationError::new(
                "status",
                "cannot be set to invited",
            )),
            (UserStatus::Invited, _) => Err(crate::ValidationError::new(
                "status",
                "an invited person becomes active by accepting; revoke the invitation or \
                 remove them instead",
            )),
            _ => {
                self.status = to;
                Ok(())
            }
        }
    }

    /// Whether the person may act in the organization: an active member (not still invited,
    /// not disabled).
    pub fn may_act(&self) -> bool {
        self.status == UserStatus::Active
    }

    /// A first token version for a new membership: random, so that no token of an earlier
    /// membership of the same person in the same organization matches it.
    pub fn fresh_token_version() -> i64 {
        i64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        ) & i64::MAX
    }
}

impl Organization {
    /// Whether the organization may hold keys of `kind`: live keys need its LIVE env.
    pub fn may_hold(&self, kind: ApiKeyKind) -> bool {
        kind != ApiKeyKind::Live || self.envs.contains(&Env::Live)
    }

    /// A new organization with only a name, as `keyplane bootstrap` creates it.
    pub fn named(name: String, envs: Vec<Env>, created_at: i64) -> Self {
        Self {
            id: OrganizationId::new(),
            name,
            display_name: None,
            address_line1: None,
            address_line2: None,
            zip: None,
            town: None,
            state: None,
            country_code: None,
            vat_id: None,
            tax_number: None,
            economy_id: None,
            contact_person_id: None,
            billing_address_id: None,
            metadata: Metadata::new(),
            managed_by: None,
            envs,
            created_at,
            created_by_user: None,
        }
    }
}

/// A person. Passwords are Argon2id PHC strings; `None` until an invitation is accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: i64,
}

/// A person's place in one organization.
#[derive(Clone, Debug, PartialEq)]
pub struct Membership {
    pub user_id: UserId,
    pub organization_id: OrganizationId,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: i64,
    /// The version of the person's tokens here: counted up by each disable, and random when the
    /// membership begins, so that tokens from before a disable, or from an earlier membership,
    /// stay dead after an enable or a new invitation.
    pub token_version: i64,
    /// The names the inviter gave, shown instead of the person's own while the invitation is
    /// pending: an invitation must not reveal whether or as whom an address exists elsewhere.
    pub invited_first_name: Option<String>,
    pub invited_last_name: Option<String>,
}

/// A person signed in to the web console, acting for one organization. Stored under the keyed
/// hash of its id (the cookie's value), never the id itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleSession {
    pub id_hash: CredentialHash,
    pub user_id: UserId,
    /// The organization picked (at sign-in or with the switcher).
    pub organization_id: OrganizationId,
    /// The membership's token version when the session began there: a disable ends the session
    /// as it ends the person's tokens, and an enable does not bring it back.
    pub token_version: i64,
    /// Compared, in constant time, with the token every form and htmx request carries.
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// A password reset link's token, stored as its keyed hash: one per person (a new request
/// replaces the last), usable once, until `expires_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct PasswordReset {
    pub token_hash: CredentialHash,
    pub user_id: UserId,
    pub created_at: i64,
    pub expires_at: i64,
}

impl PasswordReset {
    /// How long a reset link works.
    pub const LIFETIME: i64 = 3600;
    /// A person gets at most one reset mail per this many seconds, however often it is asked
    /// for (from however many addresses).
    pub const MIN_INTERVAL: i64 = 60;
}

/// How long a console session lasts: `idle` seconds without a request, `lifetime` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    pub idle: i64,
    pub lifetime: i64,
}

impl ConsoleSession {
    /// How stale `last_seen_at` may be before a request writes it again: the idle timeout is
    /// honoured to within this, and a busy session costs one write a minute, not one a request.
    pub const TOUCH_INTERVAL: i64 = 60;

    /// Whether the session still counts at `now`.
    pub fn is_live(&self, now: i64, limits: SessionLimits) -> bool {
        now < self.created_at.saturating_add(limits.lifetime)
            && now < self.last_seen_at.saturating_add(limits.idle)
    }

    /// Whether a request at `now` should record that the session was seen.
    pub fn needs_touch(&self, now: i64) -> bool {
        now - self.last_seen_at >= Self::TOUCH_INTERVAL
    }

    /// Sessions ended at `now` by either limit are those seen before the first bound or begun
    /// before the second.
    pub fn expiry_bounds(now: i64, limits: SessionLimits) -> (i64, i64) {
        (now - limits.idle, now - limits.lifetime)
    }
}

/// An invitation to join an organization; the token itself is only ever mailed, never stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Invitation {
    pub id: InvitationId,
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub token_hash: CredentialHash,
    pub invited_by: Option<UserId>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A change to an API key: `None` leaves a field as it is. Each operation writes only what it
/// changes, so concurrent changes of different fields cannot undo each other.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiKeyChanges {
    pub status: Option<ApiKeyStatus>,
    pub metadata: Option<Metadata>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<i64>>,
    pub secret: Option<SecretChange>,
    pub role: Option<Role>,
    /// Applies the change only while the key still has this role (the one the caller's right
    /// to change it was checked against); otherwise nothing changes and the key reads as gone.
    pub only_if_role: Option<Role>,
    /// Applies the change only while the key's secret is still of this generation (the one a
    /// form was shown for); otherwise nothing changes.
    pub only_if_secret_generation: Option<i64>,
}

/// A new secret, the previous one's grace period, and when the refresh-token families obtained
/// with older secrets end.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretChange {
    pub secret_hash: CredentialHash,
    /// `Some`: the secret being replaced keeps working until then. The store keeps the one the
    /// key holds when it writes (not one read before), so of two rotations at once the second
    /// keeps the first's new secret, never an older one.
    pub previous_secret_expires_at: Option<i64>,
    pub old_families_end_at: i64,
}

/// An API key. The secret is stored only as its keyed hash; during a rotation's grace period the
/// previous hash is kept beside the current one.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub organization_id: OrganizationId,
    pub name: KeyName,
    pub kind: ApiKeyKind,
    pub status: ApiKeyStatus,
    /// What its tokens may do: `admin`, `developer` or `viewer` (never `owner`).
    pub role: Role,
    pub public_key: String,
    pub secret_hash: CredentialHash,
    pub previous_secret_hash: Option<CredentialHash>,
    pub previous_secret_expires_at: Option<i64>,
    pub metadata: Metadata,
    pub created_at: i64,
    pub created_by_user: Option<UserId>,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// Counts the rotations of its secret.
    pub secret_generation: i64,
    /// The version of its tokens, counted up by each disable: tokens from before a disable stay
    /// dead when the key is enabled again.
    pub token_version: i64,
}

/// A refresh token as stored: only its keyed hash. Tokens of one login form a family; reuse of a
/// spent one revokes the family (RFC 9700 §4.14.2).
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshToken {
    pub id: String,
    pub family_id: String,
    pub token_hash: CredentialHash,
    pub subject_type: crate::tokens::SubjectType,
    pub subject_id: String,
    pub organization_id: OrganizationId,
    pub env: Env,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// When the whole family ends, however often it is refreshed (set by secret rotation).
    pub family_expires_at: Option<i64>,
    /// For an API key: the generation of the secret the family was obtained with.
    pub key_generation: Option<i64>,
    /// The subject's token version when the family began.
    pub subject_token_version: i64,
}

impl RefreshToken {
    /// Whether the token itself may still be exchanged at `now`: not revoked, not expired, and
    /// its family not ended. Whether it was spent already, and whether its subject may still act,
    /// are judged by the caller (a retried exchange may present a spent token within a grace).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none()
            && self.expires_at > now
            && self.family_expires_at.is_none_or(|end| end > now)
    }
}

/// A refresh token to store, with the audit events of the login or refresh that issued it and,
/// for a refresh, the token it replaces (spent in the same transaction).
#[derive(Clone, Debug)]
pub struct RefreshIssue {
    pub token: RefreshToken,
    pub spend_parent: Option<String>,
    pub events: Vec<AuditEvent>,
}

/// Who did something, as the audit log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    ApiKey,
    User,
    /// The operator, acting through a command on the server's host.
    System,
    /// An unauthenticated caller (e.g. a failed login).
    Anonymous,
}

impl ActorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorType::ApiKey => "api_key",
            ActorType::User => "user",
            ActorType::System => "system",
            ActorType::Anonymous => "anonymous",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "api_key" => ActorType::ApiKey,
            "user" => ActorType::User,
            "system" => ActorType::System,
            "anonymous" => ActorType::Anonymous,
            _ => return None,
        })
    }
}

/// One page of an organization's people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserQuery {
    /// By email (`false`) or by when they joined (`true`).
    pub by_created_at: bool,
    pub descending: bool,
    pub limit: u32,
    pub offset: u64,
    /// Empty: every status.
    pub statuses: Vec<UserStatus>,
    /// Empty: every role.
    pub roles: Vec<Role>,
    /// Start after this person (cursor paging; `offset` is then 0).
    pub after: Option<Position>,
}

impl Listing for UserQuery {
    fn shape(&self) -> String {
        format!(
            "users by_created_at={} descending={} statuses={:?} roles={:?}",
            self.by_created_at, self.descending, self.statuses, self.roles
        )
    }
}

/// One page of an organization's pending invitations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationQuery {
    /// By email (`true`) or by when they were sent (`false`, the default).
    pub by_email: bool,
    pub descending: bool,
    pub limit: u32,
    pub offset: u64,
    /// Start after this invitation (cursor paging; `offset` is then 0).
    pub after: Option<Position>,
}

impl Listing for InvitationQuery {
    fn shape(&self) -> String {
        format!(
            "invitations by_email={} descending={}",
            self.by_email, self.descending
        )
    }
}

/// An invitation still waiting, with whom it is for and the role it offers.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingInvitation {
    pub invitation: Invitation,
    pub email: String,
    pub role: Role,
}

/// What a membership change or removal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipOutcome {
    Done,
    /// It would leave the organization without an active owner; nothing changed.
    LastOwner,
    NotFound,
    /// Its role or status changed since the caller read it; nothing changed.
    Stale,
}

/// One page of an organization's audit log, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub limit: u32,
    pub offset: u64,
    /// Empty: every action.
    pub actions: Vec<String>,
    pub actor_id: Option<String>,
    /// Inclusive bounds on `created_at`.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Oldest first instead.
    pub oldest_first: bool,
    /// Start after this event (cursor paging; `offset` is then 0).
    pub after: Option<Position>,
}

impl Listing for AuditQuery {
    fn shape(&self) -> String {
        format!(
            "audit_events actions={:?} actor_id={:?} since={:?} until={:?} oldest_first={}",
            self.actions, self.actor_id, self.since, self.until, self.oldest_first
        )
    }
}

/// One audit event. Written in the same transaction as the change it records.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub organization_id: OrganizationId,
    pub action: String,
    pub actor_type: ActorType,
    pub actor_id: Option<String>,
    pub target_type: String,
    pub target_id: String,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub created_at: i64,
}

impl AuditEvent {
    pub fn system(
        organization_id: OrganizationId,
        action: AuditAction,
        target_type: &str,
        target_id: String,
        created_at: i64,
    ) -> Self {
        Self {
            id: AuditEventId::new(),
            organization_id,
            action: action.as_str().to_owned(),
            actor_type: ActorType::System,
            actor_id: None,
            target_type: target_type.to_owned(),
            target_id,
            request_id: None,
            ip: None,
            created_at,
        }
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    fn session(created_at: i64, last_seen_at: i64) -> ConsoleSession {
        ConsoleSession {
            id_hash: CredentialHash([0; 32]),
            user_id: UserId::new(),
            organization_id: OrganizationId::new(),
            token_version: 0,
            csrf_token: String::new(),
            created_at,
            last_seen_at,
        }
    }

    const LIMITS: SessionLimits = SessionLimits {
        idle: 1800,
        lifetime: 43200,
    };

    #[test]
    fn a_session_ends_after_the_idle_timeout_without_a_request() {
        let s = session(0, 1000);
        assert!(s.is_live(2799, LIMITS));
        assert!(!s.is_live(2800, LIMITS));
    }

    #[test]
    fn a_session_ends_at_its_lifetime_however_busy() {
        let s = session(0, 43199);
        assert!(s.is_live(43199, LIMITS));
        assert!(!s.is_live(43200, LIMITS));
    }

    #[test]
    fn a_session_is_touched_at_most_once_a_minute() {
        let s = session(0, 100);
        assert!(!s.needs_touch(159));
        assert!(s.needs_touch(160));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::CredentialHash;
    use crate::tokens::SubjectType;

    fn token(expires_at: i64, family_expires_at: Option<i64>) -> RefreshToken {
        RefreshToken {
            id: "id".into(),
            family_id: "family".into(),
            token_hash: CredentialHash::from_slice(&[0; 32]).unwrap(),
            subject_type: SubjectType::ApiKey,
            subject_id: "key".into(),
            organization_id: OrganizationId::new(),
            env: Env::Test,
            created_at: 0,
            expires_at,
            used_at: None,
            revoked_at: None,
            family_expires_at,
            key_generation: Some(0),
            subject_token_version: 0,
        }
    }

    #[test]
    fn a_refresh_token_is_live_until_it_or_its_family_ends_or_it_is_revoked() {
        assert!(token(100, None).is_live(99));
        assert!(!token(100, None).is_live(100));
        assert!(token(100, Some(200)).is_live(99));
        assert!(!token(100, Some(50)).is_live(60), "its family ended");
        let mut revoked = token(100, None);
        revoked.revoked_at = Some(10);
        assert!(!revoked.is_live(20));
        let mut spent = token(100, None);
        spent.used_at = Some(10);
        assert!(spent.is_live(20), "spending is judged by the exchange");
    }

    #[test]
    fn only_active_members_may_act() {
        let membership = |status| Membership {
            user_id: UserId::random(),
            organization_id: OrganizationId::new(),
            role: Role::Admin,
            status,
            created_at: 0,
            token_version: 0,
            invited_first_name: None,
            invited_last_name: None,
        };
        assert!(membership(UserStatus::Active).may_act());
        assert!(!membership(UserStatus::Invited).may_act());
        assert!(!membership(UserStatus::Disabled).may_act());
    }

    #[test]
    fn status_changes_go_between_active_and_disabled_only() {
        let mut member = Membership {
            user_id: UserId::random(),
            organization_id: OrganizationId::new(),
            role: Role::Admin,
            status: UserStatus::Active,
            created_at: 0,
            token_version: 0,
            invited_first_name: None,
            invited_last_name: None,
        };
        member.change_status(UserStatus::Disabled).unwrap();
        assert_eq!(member.status, UserStatus::Disabled);
        member.change_status(UserStatus::Active).unwrap();
        assert_eq!(member.status, UserStatus::Active);
        assert_eq!(
            member.change_status(UserStatus::Invited).unwrap_err().field,
            "status"
        );
        member.status = UserStatus::Invited;
        assert!(member.change_status(UserStatus::Active).is_err());
        assert!(member.change_status(UserStatus::Disabled).is_err());
        assert_eq!(member.status, UserStatus::Invited);
    }

    #[test]
    fn live_keys_need_the_live_env() {
        let mut organization = Organization::named("o".into(), vec![Env::Test], 0);
        assert!(organization.may_hold(ApiKeyKind::Test));
        assert!(!organization.may_hold(ApiKeyKind::Live));
        organization.envs.push(Env::Live);
        assert!(organization.may_hold(ApiKeyKind::Live));
    }
}
