//! API keys as a domain: creation, rotation, metadata rules and list queries. No HTTP, no SQL.

use crate::ids::{ApiKeyId, OrganizationId, UserId};
use crate::paging::{Listing, Position};
use crate::records::{ApiKey, Metadata, SecretChange};
use crate::secrets::{CredentialKind, PlainCredential, ServerSecrets, generate_public_key};
use crate::values::{
    ApiKeyKind, ApiKeyStatus, KeyName, Role, ValidationError, is_forbidden_in_text,
};

pub const MAX_METADATA_KEYS: usize = 20;
pub const MAX_METADATA_KEY_LENGTH: usize = 40;
pub const MAX_METADATA_VALUE_LENGTH: usize = 500;
/// Longest grace period of a rotation: one week.
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 604_800;
/// Latest `expires_at` accepted: a hundred years out is a mistake, not a plan.
const MAX_EXPIRY_SECONDS: i64 = 10 * 365 * 86_400;

/// Metadata rules (README, "API keys"): at most 20 keys, key names at most 40 characters, values
/// strings of at most 500 characters (as fiskaly's); anything else, numbers and booleans too, is
/// refused naming the offending key.
pub fn validate_metadata(metadata: &Metadata) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ValidationError::new(
            "metadata",
            format!("at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (key, value) in metadata {
        // The key as the error names it: at most the longest valid key, so an oversized one is
        // not echoed back whole.
        let shown: String = key.chars().take(MAX_METADATA_KEY_LENGTH).collect();
        let ellipsis = if shown.len() < key.len() { "…" } else { "" };
        let field = format!("metadata.{shown}{ellipsis}");
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_LENGTH {
            return Err(ValidationError::new(
                field,
                format!("key names are 1 to {MAX_METADATA_KEY_LENGTH} characters"),
            ));
        }
        if key.chars().any(is_forbidden_in_text) {
            return Err(ValidationError::new(
                field,
                "control characters are not allowed",
            ));
        }
        match value {
            serde_json::Value::String(text) => {
                if text.chars().count() > MAX_METADATA_VALUE_LENGTH {
                    return Err(ValidationError::new(
                        field,
                        format!("at most {MAX_METADATA_VALUE_LENGTH} characters"),
                    ));
                }
                if text.chars().any(is_forbidden_in_text) {
                    return Err(ValidationError::new(
                        field,
                        "control characters are not allowed",
                    ));
                }
            }
            _ => return Err(ValidationError::new(field, "must be a string")),
        }
    }
    Ok(())
}

/// An expiry must lie in the future, and not absurdly far.
pub fn validate_expires_at(expires_at: i64, now: i64) -> Result<(), ValidationError> {
    if expires_at <= now {
        return Err(ValidationError::new("expires_at", "must be in the future"));
    }
    if expires_at > now + MAX_EXPIRY_SECONDS {
        return Err(ValidationError::new(
            "expires_at",
            "at most ten years ahead",
        ));
    }
    Ok(())
}

pub fn validate_grace_period(seconds: i64) -> Result<(), ValidationError> {
    if !(0..=MAX_GRACE_PERIOD_SECONDS).contains(&seconds) {
        return Err(ValidationError::new(
            "grace_period_seconds",
            format!("must be between 0 and {MAX_GRACE_PERIOD_SECONDS}"),
        ));
    }
    Ok(())
}

/// What a new key is made of, validated.
pub struct NewApiKey {
    pub organization_id: OrganizationId,
    pub name: KeyName,
    pub kind: ApiKeyKind,
    pub status: ApiKeyStatus,
    pub role: Role,
    pub metadata: Metadata,
    pub expires_at: Option<i64>,
    pub created_by_user: Option<UserId>,
}

/// A new key and its secret, shown once.
pub fn create(new: NewApiKey, secrets: &ServerSecrets, now: i64) -> (ApiKey, PlainCredential) {
    let secret = PlainCredential::generate();
    let key = ApiKey {
        id: ApiKeyId::new(),
        organization_id: new.organization_id,
        public_key: generate_public_key(new.kind, &new.name),
        name: new.name,
        kind: new.kind,
        status: new.status,
        role: new.role,
        secret_hash: secrets.hash_credential(CredentialKind::ApiSecret, secret.expose()),
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        metadata: new.metadata,
        created_at: now,
        created_by_user: new.created_by_user,
        last_used_at: None,
        expires_at: new.expires_at,
        secret_generation: 0,
        token_version: 0,
    };
    (key, secret)
}

/// A new secret for `key`. The current one keeps working for `grace_seconds` (none with 0); an
/// older secret still in its grace period stops at once, and so do, when the grace period ends,
/// the refresh-token families obtained with the old secrets.
pub fn rotate(
    grace_seconds: i64,
    secrets: &ServerSecrets,
    now: i64,
) -> (SecretChange, PlainCredential) {
    let secret = PlainCredential::generate();
    let keep_old = grace_seconds > 0;
    let change = SecretChange {
        secret_hash: secrets.hash_credential(CredentialKind::ApiSecret, secret.expose()),
        previous_secret_expires_at: keep_old.then_some(now + grace_seconds),
        old_families_end_at: now + grace_seconds,
    };
    (change, secret)
}

/// Which of a key's secrets still count: the generation of the current one (each rotation counts
/// it up) and when the grace of the previous one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretState {
    pub generation: i64,
    pub previous_expires_at: Option<i64>,
}

impl SecretState {
    pub fn of(key: &ApiKey) -> Self {
        Self {
            generation: key.secret_generation,
            previous_expires_at: key.previous_secret_expires_at,
        }
    }

    /// How long what was obtained with the secret of `generation` (a refresh-token family, an
    /// access token) may go on, judged from the key as it is now: `Some(None)` without a limit
    /// (the current secret), `Some(Some(end))` until the grace period of the rotation that
    /// replaced that secret ends, `None` when it has ended (a secret two or more rotations old,
    /// or one replaced without grace).
    pub fn end_of(&self, generation: i64) -> Option<Option<i64>> {
        if generation == self.generation {
            Some(None)
        } else if generation + 1 == self.generation {
            self.previous_expires_at.map(Some)
        } else {
            None
        }
    }
}

/// Sort orders of a key list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyOrder {
    Name,
    Kind,
    Status,
    CreatedAt,
}

impl ApiKeyOrder {
    pub const ALL: [(&'static str, ApiKeyOrder); 4] = [
        ("name", ApiKeyOrder::Name),
        ("kind", ApiKeyOrder::Kind),
        ("status", ApiKeyOrder::Status),
        ("created_at", ApiKeyOrder::CreatedAt),
    ];
}

/// One page of an organization's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyQuery {
    pub order_by: ApiKeyOrder,
    pub descending: bool,
    pub limit: u32,
    pub offset: u64,
    /// Empty: every kind.
    pub kinds: Vec<ApiKeyKind>,
    /// Empty: every status.
    pub statuses: Vec<ApiKeyStatus>,
    /// Start after this key (cursor paging; `offset` is then 0).
    pub after: Option<Position>,
}

impl Listing for ApiKeyQuery {
    fn shape(&self) -> String {
        format!(
            "api_keys order_by={:?} descending={} kinds={:?} statuses={:?}",
            self.order_by, self.descending, self.kinds, self.statuses
        )
    }
}

impl ApiKey {
    /// Whether the key may act now: enabled and not expired.
    pub fn is_usable(&self, now: i64) -> bool {
        self.status == ApiKeyStatus::Enabled && self.expires_at.is_none_or(|at| at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MasterKey;
    use serde_json::json;

    fn pos_key() -> NewApiKey {
        NewApiKey {
            organization_id: OrganizationId::new(),
            name: KeyName::parse("pos-1").unwrap(),
            kind: ApiKeyKind::Test,
            status: ApiKeyStatus::Enabled,
            role: Role::Admin,
            metadata: Metadata::new(),
            expires_at: None,
            created_by_user: None,
        }
    }

    fn metadata(value: serde_json::Value) -> Metadata {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn metadata_limits_name_the_offending_key() {
        assert!(validate_metadata(&metadata(json!({"a": "b", "c": ""}))).is_ok());
        let many: Metadata = (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(validate_metadata(&many).unwrap_err().field, "metadata");
        let long_key = "k".repeat(41);
        let error = validate_metadata(&metadata(json!({long_key.clone(): "v"}))).unwrap_err();
        // Named by its first 40 characters: an oversized key is not echoed back whole.
        assert_eq!(error.field, format!("metadata.{}…", "k".repeat(40)));
        let error = validate_metadata(&metadata(json!({"note": "x".repeat(501)}))).unwrap_err();
        assert_eq!(error.field, "metadata.note");
        assert!(validate_metadata(&metadata(json!({"note": "x".repeat(500)}))).is_ok());
        for bad in [
            json!({"n": 1}),
            json!({"n": 1.5}),
            json!({"n": true}),
            json!({"n": null}),
            json!({"n": [1]}),
            json!({"n": {"a": 1}}),
            json!({"n": "a\u{0}b"}),
            json!({"n": "invoice\u{202e}fdp.exe"}),
            json!({"n": "a\u{2066}b"}),
        ] {
            assert_eq!(
                validate_metadata(&metadata(bad)).unwrap_err().field,
                "metadata.n"
            );
        }
    }

    #[test]
    fn rotation_keeps_the_old_secret_only_for_the_grace_period() {
        let secrets = MasterKey::generate().derive();
        let new = pos_key();
        let (mut key, first) = create(new, &secrets, 100);
        assert!(key.public_key.starts_with("test_") && key.public_key.ends_with("_pos-1"));
        let verify = |hash: &crate::secrets::CredentialHash, secret: &PlainCredential| {
            secrets.verify_credential(CredentialKind::ApiSecret, secret.expose(), hash)
        };
        assert!(verify(&key.secret_hash, &first));
        let (change, second) = rotate(60, &secrets, 200);
        assert!(verify(&change.secret_hash, &second));
        assert!(!verify(&change.secret_hash, &first));
        assert_eq!(change.previous_secret_expires_at, Some(260));
        assert_eq!(change.previous_secret_expires_at, Some(260));
        assert_eq!(change.old_families_end_at, 260);
        key.secret_hash = change.secret_hash;
        let (change, third) = rotate(0, &secrets, 300);
        assert!(verify(&change.secret_hash, &third));
        assert_eq!(change.previous_secret_expires_at, None);
        assert_eq!(change.old_families_end_at, 300);
    }

    #[test]
    fn a_family_ends_with_the_grace_of_the_rotation_that_replaced_its_secret() {
        let secrets = MasterKey::generate().derive();
        let new = pos_key();
        let (mut key, _) = create(new, &secrets, 100);
        let family_end = |key: &ApiKey, generation| SecretState::of(key).end_of(generation);
        assert_eq!(family_end(&key, 0), Some(None));
        key.secret_generation = 1;
        key.previous_secret_expires_at = Some(160);
        assert_eq!(family_end(&key, 1), Some(None));
        assert_eq!(family_end(&key, 0), Some(Some(160)));
        key.previous_secret_expires_at = None;
        assert_eq!(family_end(&key, 0), None, "rotated without grace");
        key.secret_generation = 2;
        key.previous_secret_expires_at = Some(300);
        assert_eq!(family_end(&key, 0), None, "two rotations old");
    }

    #[test]
    fn expiry_and_grace_bounds() {
        assert!(validate_expires_at(101, 100).is_ok());
        assert!(validate_expires_at(100, 100).is_err());
        assert!(validate_expires_at(100 + MAX_EXPIRY_SECONDS + 1, 100).is_err());
        assert!(validate_grace_period(0).is_ok() && validate_grace_period(604_800).is_ok());
        assert!(validate_grace_period(-1).is_err() && validate_grace_period(604_801).is_err());
    }
}
