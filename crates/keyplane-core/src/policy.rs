//! Who may do what (README, "People and invitations"), in one table that every handler consults. Visibility
//! (which organizations a caller can see at all) is decided before this, and answers 404.

use crate::values::Role;

/// What a request wants to do in an organization the caller can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read organizations, API keys, users, invitations and the audit log.
    Read,
    /// Create, change, rotate and delete API keys.
    ManageApiKeys,
    /// Create, change and delete organizations; enable envs.
    ManageOrganizations,
    /// Invite, change and remove people, and manage invitations.
    ManageUsers,
    /// Make someone an owner, or change or remove an owner.
    ManageOwners,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::ManageApiKeys,
        Action::ManageOrganizations,
        Action::ManageUsers,
        Action::ManageOwners,
    ];
}

/// Whether `role` may perform `action`, for people and API keys alike (a key acts with its own
/// role).
pub fn allows(role: Role, action: Action) -> bool {
    match role {
        Role::Owner => true,
        Role::Admin => action != Action::ManageOwners,
        Role::Developer => matches!(action, Action::Read | Action::ManageApiKeys),
        Role::Viewer => action == Action::Read,
    }
}

/// How far a role reaches: each role may do all that the roles below it may.
fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Developer => 1,
        Role::Admin => 2,
        Role::Owner => 3,
    }
}

/// Why a caller may not give a key a role or touch a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRoleRefusal {
    /// `owner` is a person's role; a key holds `admin`, `developer` or `viewer`.
    NotAKeyRole,
    /// Above the caller's own role (a key of it would act with more rights than its maker).
    AboveCaller,
}

/// The role a key gets when a caller of role `caller` creates it or changes its role: the one
/// asked for when it is a key role no higher than the caller's; without one, the caller's own,
/// at most `admin` (what fiskaly clients expect a key to be).
pub fn key_role(caller: Role, requested: Option<Role>) -> Result<Role, KeyRoleRefusal> {
    match requested {
        None => Ok(if caller == Role::Owner {
            Role::Admin
        } else {
            caller
        }),
        Some(Role::Owner) => Err(KeyRoleRefusal::NotAKeyRole),
        Some(role) if rank(role) > rank(caller) => Err(KeyRoleRefusal::AboveCaller),
        Some(role) => Ok(role),
    }
}

/// Whether a caller of role `caller` may change, rotate or delete a key of role `key`: not one
/// above its own, since rotating hands over the new secret and with it the key's rights.
pub fn may_touch_key(caller: Role, key: Role) -> bool {
    rank(key) <= rank(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_reach_above_their_maker() {
        use Role::*;
        assert_eq!(key_role(Owner, None), Ok(Admin));
        assert_eq!(key_role(Admin, None), Ok(Admin));
        assert_eq!(key_role(Developer, None), Ok(Developer));
        assert_eq!(key_role(Viewer, None), Ok(Viewer));
        assert_eq!(
            key_role(Owner, Some(Owner)),
            Err(KeyRoleRefusal::NotAKeyRole)
        );
        assert_eq!(
            key_role(Developer, Some(Admin)),
            Err(KeyRoleRefusal::AboveCaller)
        );
        assert_eq!(key_role(Developer, Some(Viewer)), Ok(Viewer));
        assert_eq!(key_role(Admin, Some(Developer)), Ok(Developer));
        assert!(may_touch_key(Admin, Admin) && may_touch_key(Owner, Admin));
        assert!(!may_touch_key(Developer, Admin) && may_touch_key(Developer, Developer));
        assert!(!may_touch_key(Viewer, Developer));
    }

    /// The documented table, written out: a change to `allows` that breaks it fails here.
    #[test]
    fn every_role_against_every_action() {
        use Action::*;
        let expected: [(Role, [bool; 5]); 4] = [
            //            Read   Keys   Orgs   Users  Owners
            (Role::Owner, [true, true, true, true, true]),
            (Role::Admin, [true, true, true, true, false]),
            (Role::Developer, [true, true, false, false, false]),
            (Role::Viewer, [true, false, false, false, false]),
        ];
        assert_eq!(
            Action::ALL,
            [
                Read,
                ManageApiKeys,
                ManageOrganizations,
                ManageUsers,
                ManageOwners
            ]
        );
        for (role, row) in expected {
            for (action, allowed) in Action::ALL.into_iter().zip(row) {
                assert_eq!(allows(role, action), allowed, "{role:?} {action:?}");
            }
        }
    }
}
