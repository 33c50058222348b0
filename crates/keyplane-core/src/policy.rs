//! Who may do what (contract section 7), in one table that every handler consults. Visibility
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

/// Whether `role` may perform `action`. API keys act as `admin`.
pub fn allows(role: Role, action: Action) -> bool {
    match role {
        Role::Owner => true,
        Role::Admin => action != Action::ManageOwners,
        Role::Developer => matches!(action, Action::Read | Action::ManageApiKeys),
        Role::Viewer => action == Action::Read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's table, written out: a change to `allows` that breaks it fails here.
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
