//! Server secrets and everything derived from them: the pepper that keys secret hashes, random
//! credentials, and the one function that hashes a credential for storage.
//!
//! API secrets, refresh tokens and invitation tokens are random with at least 256 bits of entropy,
//! so a fast keyed hash (HMAC-SHA-256 under a pepper that never enters the database) is the right
//! tool: a slow password hash would only slow the token path, and a database dump alone is useless
//! without the pepper.

use std::fmt;

use aws_lc_rs::{hkdf, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use subtle::ConstantTimeEq;

use crate::values::{ApiKeyKind, KeyName};

/// The 32-byte root secret of a Keyplane deployment. Every node of a deployment shares it; the
/// pepper and the key that encrypts signing keys at rest are derived from it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

#[derive(Debug, thiserror::Error)]
#[error(
    "the master key must be 32 bytes, base64-encoded (generate one with `keyplane keys generate-master-key`)"
)]
pub struct InvalidMasterKey;

impl MasterKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        Self(bytes)
    }

    /// Accepts standard or URL-safe base64, padded or not, surrounded by whitespace or not.
    pub fn from_base64(text: &str) -> Result<Self, InvalidMasterKey> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| InvalidMasterKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| InvalidMasterKey)?;
        Ok(Self(bytes))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Derives the secrets the server works with. Distinct HKDF labels keep them independent.
    pub fn derive(&self) -> ServerSecrets {
        ServerSecrets {
            pepper: hmac::Key::new(
                hmac::HMAC_SHA256,
                &self.expand(b"keyplane/v1/secret-pepper"),
            ),
            signing_key_encryption: self.expand(b"keyplane/v1/signing-key-encryption"),
            idempotency: self.expand(b"keyplane/v1/idempotency"),
            cursor_key: hmac::Key::new(hmac::HMAC_SHA256, &self.expand(b"keyplane/v1/list-cursor")),
        }
    }

    fn expand(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"keyplane")
            .extract(&self.0)
            .expand(&[label], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        out
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Secrets derived from the master key, held in memory only.
#[derive(Clone)]
pub struct ServerSecrets {
    pepper: hmac::Key,
    signing_key_encryption: [u8; 32],
    /// The master-key half of what keys idempotency records (see [`crate::idempotency`]).
    idempotency: [u8; 32],
    /// Authenticates list cursors ([`crate::paging`]).
    cursor_key: hmac::Key,
}

impl fmt::Debug for ServerSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecrets(<redacted>)")
    }
}

/// What kind of credential a hash belongs to; part of the hashed input, so a hash of one kind can
/// never be replayed as another.
#[derive(Clone, Copy, Debug)]
pub enum CredentialKind {
    ApiSecret,
    RefreshToken,
    InvitationToken,
    /// The id of a web console session, held in its cookie.
    ConsoleSession,
    /// The one-time token of the console's first-run setup link.
    SetupToken,
    /// The token of a mailed password reset link.
    PasswordReset,
}

impl CredentialKind {
    fn label(self) -> &'static [u8] {
        match self {
            CredentialKind::ApiSecret => b"api-secret\0",
            CredentialKind::RefreshToken => b"refresh-token\0",
            CredentialKind::InvitationToken => b"invitation-token\0",
            CredentialKind::ConsoleSession => b"console-session\0",
            CredentialKind::SetupToken => b"setup-token\0",
            CredentialKind::PasswordReset => b"password-reset\0",
        }
    }
}

/// The stored form of a credential: HMAC-SHA-256 under the pepper.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialHash(pub [u8; 32]);

impl CredentialHash {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHash(<redacted>)")
    }
}

impl ServerSecrets {
    /// The one place a credential is hashed for storage or lookup.
    pub fn hash_credential(&self, kind: CredentialKind, credential: &str) -> CredentialHash {
        let mut ctx = hmac::Context::with_key(&self.pepper);
        ctx.update(kind.label());
        ctx.update(credential.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        CredentialHash(out)
    }

    /// Compares a presented credential with a stored hash in constant time.
    pub fn verify_credential(
        &self,
        kind: CredentialKind,
        credential: &str,
        stored: &CredentialHash,
    ) -> bool {
        let presented = self.hash_credential(kind, credential);
        presented.0.ct_eq(&stored.0).into()
    }

    pub(crate) fn cursor_key(&self) -> &hmac::Key {
        &self.cursor_key
    }

    /// The key that encrypts signing keys at rest.
    pub fn signing_key_encryption_key(&self) -> &[u8; 32] {
        &self.signing_key_encryption
    }

    /// The master-key half of the keys of idempotency records; only [`crate::idempotency`]
    /// derives from it.
    pub(crate) fn idempotency_root(&self) -> &[u8; 32] {
        &self.idempotency
    }
}

/// A freshly generated credential in plain text: shown once, never logged (Debug is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredential(String);

impl PlainCredential {
    /// 256 bits from the system's CSPRNG, base64url without padding (43 URL-safe characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A credential that names its own record: `<selector>.<256 random bits>`. The selector (a
    /// time-ordered record id) finds the row without an index on random hashes, so inserts
    /// append; the keyed hash of the whole credential is what is stored and compared.
    pub fn with_selector(selector: &str) -> Self {
        Self(format!("{selector}.{}", Self::generate().0))
    }

    /// The selector of a credential made by [`PlainCredential::with_selector`]; `None` for
    /// anything else.
    pub fn selector_of(presented: &str) -> Option<&str> {
        presented
            .split_once('.')
            .map(|(selector, _)| selector)
            .filter(|selector| !selector.is_empty())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for PlainCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainCredential(<redacted>)")
    }
}

/// The public identifier of an API key: `<kind>_<24 lowercase base36 chars>_<name>`.
pub fn generate_public_key(kind: ApiKeyKind, name: &KeyName) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut middle = String::with_capacity(24);
    let mut buf = [0u8; 64];
    while middle.len() < 24 {
        fill_random(&mut buf);
        // Rejection sampling keeps every character equally likely: 252 = 7 * 36.
        for &b in buf.iter().filter(|&&b| b < 252) {
            if middle.len() == 24 {
                break;
            }
            middle.push(ALPHABET[(b % 36) as usize] as char);
        }
    }
    format!("{}_{}_{}", kind.as_str(), middle, name.as_str())
}

fn fill_random(buf: &mut [u8]) {
    rand::fill(buf).expect("the system CSPRNG is available");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> ServerSecrets {
        MasterKey::generate().derive()
    }

    #[test]
    fn a_credential_verifies_against_its_own_hash_only() {
        let secrets = secrets();
        let secret = PlainCredential::generate();
        let stored = secrets.hash_credential(CredentialKind::ApiSecret, secret.expose());
        assert!(secrets.verify_credential(CredentialKind::ApiSecret, secret.expose(), &stored));
        let other = PlainCredential::generate();
        assert!(!secrets.verify_credential(CredentialKind::ApiSecret, other.expose(), &stored));
    }

    #[test]
    fn hashes_depend_on_the_master_key_and_the_credential_kind() {
        let secret = "same-input";
        let a = secrets();
        let b = secrets();
        assert!(
            a.hash_credential(CredentialKind::ApiSecret, secret)
                != b.hash_credential(CredentialKind::ApiSecret, secret)
        );
        assert!(
            a.hash_credential(CredentialKind::ApiSecret, secret)
                != a.hash_credential(CredentialKind::RefreshToken, secret)
        );
    }

    #[test]
    fn the_same_master_key_derives_the_same_pepper_on_every_node() {
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert!(
            key.derive().hash_credential(CredentialKind::ApiSecret, "x")
                == again
                    .derive()
                    .hash_credential(CredentialKind::ApiSecret, "x")
        );
    }

    #[test]
    fn master_keys_of_the_wrong_length_are_rejected() {
        assert!(MasterKey::from_base64(&STANDARD.encode([0u8; 16])).is_err());
        assert!(MasterKey::from_base64("not base64 at all!").is_err());
    }

    #[test]
    fn generated_secrets_carry_256_bits_in_url_safe_characters() {
        let secret = PlainCredential::generate();
        assert_eq!(secret.expose().len(), 43);
        assert!(
            secret
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(secret, PlainCredential::generate());
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }

    #[test]
    fn public_keys_follow_kind_random_name() {
        let name = KeyName::parse("pos-berlin").unwrap();
        let key = generate_public_key(ApiKeyKind::Test, &name);
        let parts: Vec<&str> = key.splitn(3, '_').collect();
        assert_eq!(parts[0], "test");
        assert_eq!(parts[1].len(), 24);
        assert!(
            parts[1]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(parts[2], "pos-berlin");
    }
}
