//! Typed identifiers: UUID v7 (time-ordered, so indexes stay compact) behind one newtype each,
//! so an organization id can never be passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(value: Uuid) -> Self {
                Self(value)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lowercase, as fiskaly renders ids.
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies an organization.
    OrganizationId
);
id_type!(
    /// Identifies a person (a user may belong to several organizations).
    UserId
);
id_type!(
    /// Identifies an API key.
    ApiKeyId
);
id_type!(
    /// Identifies an invitation.
    InvitationId
);
id_type!(
    /// Identifies an audit event.
    AuditEventId
);

impl UserId {
    /// A fresh, random (not time-ordered) person id: a person's id is shown to every
    /// organization that invites their address, and must not tell when they first appeared.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = OrganizationId::new();
        let parsed: OrganizationId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let first = ApiKeyId::new();
        let second = ApiKeyId::new();
        assert!(second > first);
    }

    #[test]
    fn rejects_text_that_is_not_a_uuid() {
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
