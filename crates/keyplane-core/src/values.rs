//! Validated values: each has a `parse` constructor, so an invalid one cannot exist past the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that breaks a rule of the API (README, "API keys", "Organizations", "People and
/// invitations"); `field` names the offending input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks a free-text field: length in characters within `min..=max`, no control characters.
/// Strings are stored as sent, so nothing is trimmed.
/// How long a person's password may be, in characters.
pub const PASSWORD_LENGTH: (usize, usize) = (12, 256);

/// A person's new password: 12 to 256 characters (anything else about it is the person's).
pub fn check_password(password: &str) -> Result<(), ValidationError> {
    let len = password.chars().count();
    if !(PASSWORD_LENGTH.0..=PASSWORD_LENGTH.1).contains(&len)
        || password.chars().any(char::is_control)
    {
        return Err(ValidationError::new(
            "password",
            "must be 12 to 256 characters",
        ));
    }
    Ok(())
}

/// Characters no text field or metadata may hold: control characters, and the invisible
/// bidirectional controls that make text display otherwise than it reads ("Trojan Source").
pub fn is_forbidden_in_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(ValidationError::new(
            field,
            format!("must be between {min} and {max} characters long"),
        ));
    }
    if value.chars().any(is_forbidden_in_text) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                check_text($field, &value, $min, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_value!(
    /// An organization's name: 3 to 100 characters.
    OrganizationName,
    "name",
    3,
    100
);

/// An e-mail address. Kept as sent; compared case-insensitively by the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        check_text("email", &value, 3, 254)?;
        let valid = match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !value.chars().any(char::is_whitespace)
            }
            None => false,
        };
        if !valid {
            return Err(ValidationError::new(
                "email",
                "must be an e-mail address such as someone@example.com",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An API key's name: `^[a-z0-9-]{3,30}$`, unique within its organization.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        let valid = (3..=30).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ValidationError::new(
                "name",
                "must be 3 to 30 characters of a-z, 0-9 and -",
            ));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[doc = $doc:literal])* $name:ident, $field:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        // Written out: utoipa's derive does not see a `rename` passed through a macro, and
        // documented the variants' Rust names instead of the values on the wire.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let description = [$($doc),*].map(str::trim).join("\n");
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(description))
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ValidationError::new(
                        $field,
                        concat!("must be one of:" $(, " ", $text)+),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The environment a resource or token lives in.
    Env, "env", { Test => "TEST", Live => "LIVE" }
);
string_enum!(
    /// Whether an API key yields `TEST` or `LIVE` tokens.
    ApiKeyKind, "kind", { Test => "test", Live => "live" }
);
string_enum!(
    /// Whether an API key may obtain tokens.
    ApiKeyStatus, "status", { Enabled => "enabled", Disabled => "disabled" }
);
string_enum!(
    /// A person's role within one organization.
    Role, "role", { Owner => "owner", Admin => "admin", Developer => "developer", Viewer => "viewer" }
);
string_enum!(
    /// A person's standing within one organization.
    UserStatus, "status", { Invited => "invited", Active => "active", Disabled => "disabled" }
);

impl ApiKeyKind {
    /// The environment of the tokens a key of this kind obtains.
    pub fn env(self) -> Env {
        match self {
            ApiKeyKind::Test => Env::Test,
            ApiKeyKind::Live => Env::Live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_names_must_be_three_to_a_hundred_characters() {
        assert!(OrganizationName::parse("ab").is_err());
        assert!(OrganizationName::parse("abc").is_ok());
        assert!(OrganizationName::parse("é".repeat(100)).is_ok());
        let err = OrganizationName::parse("x".repeat(101)).unwrap_err();
        assert_eq!(err.field, "name");
    }

    #[test]
    fn text_with_control_characters_is_rejected() {
        assert!(OrganizationName::parse("bad\u{0}name").is_err());
        assert!(OrganizationName::parse("bad\nname").is_err());
    }

    #[test]
    fn text_is_kept_as_sent() {
        let name = OrganizationName::parse("  spaced  ").unwrap();
        assert_eq!(name.as_str(), "  spaced  ");
    }

    #[test]
    fn key_names_follow_the_documented_pattern() {
        for good in ["abc", "pos-berlin", "a1-", &"a".repeat(30)] {
            assert!(KeyName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Upper",
            "with_underscore",
            "spa ce",
            &"a".repeat(31),
            "ümlaut",
        ] {
            assert!(KeyName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(Email::parse("ada@example.com").is_ok());
        for bad in [
            "ada",
            "@example.com",
            "ada@",
            "ada@@example.com",
            "a da@example.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_parse_only_their_listed_values() {
        assert_eq!("live".parse::<ApiKeyKind>().unwrap(), ApiKeyKind::Live);
        let err = "LIVE".parse::<ApiKeyKind>().unwrap_err();
        assert_eq!(err.field, "kind");
        assert_eq!(err.message, "must be one of: test live");
        assert_eq!(ApiKeyKind::Live.env(), Env::Live);
    }

    #[test]
    fn the_openapi_schemas_list_the_values_on_the_wire() {
        fn check<T: utoipa::PartialSchema + Serialize>(all: &[T]) {
            let schema = serde_json::to_value(T::schema()).unwrap();
            let wire: Vec<serde_json::Value> = all
                .iter()
                .map(|value| serde_json::to_value(value).unwrap())
                .collect();
            assert_eq!(schema["enum"], serde_json::Value::Array(wire));
            assert!(
                schema["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            );
        }
        check(Env::ALL);
        check(ApiKeyKind::ALL);
        check(ApiKeyStatus::ALL);
        check(Role::ALL);
        check(UserStatus::ALL);
    }

    #[test]
    fn text_may_not_hide_how_it_reads() {
        assert!(check_text("town", "Zürich", 1, 100).is_ok());
        assert!(
            check_text(
                "town",
                "\u{5d9}\u{5e8}\u{5d5}\u{5e9}\u{5dc}\u{5d9}\u{5dd}",
                1,
                100
            )
            .is_ok()
        );
        for bad in ["Z\u{202e}rich", "a\u{2066}b", "a\u{200f}b", "a\u{7}b"] {
            assert_eq!(check_text("town", bad, 1, 100).unwrap_err().field, "town");
        }
        // A password is the person's own: only its length and control characters are checked.
        assert!(check_password("correct\u{202e}horse battery").is_ok());
        assert!(check_password("short").is_err());
    }
}
