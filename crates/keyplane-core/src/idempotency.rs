//! Idempotency keys (contract §12): the rules of the `Idempotency-Key` header, which answers are
//! kept, and the one place their records are keyed and encrypted.
//!
//! A record is found by a keyed hash of the idempotency key, and the answer it keeps is
//! encrypted (AES-256-GCM) under a key derived from both the master key and the idempotency key
//! itself, which is never stored. So the database alone reveals nothing, and the database with
//! the master key reveals an answer only to someone who also holds (or guesses) its idempotency
//! key: clients should use random keys (a UUID v4), as they do with Stripe. The fingerprint of
//! the request (method, path and query, body) is keyed the same way, so a body holding a
//! password cannot be tested offline against the stored fingerprint either.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ValidationError;
use crate::secrets::ServerSecrets;

/// The header, also the field named by its validation errors.
pub const HEADER: &str = "Idempotency-Key";

/// Longest idempotency key, in characters (printable ASCII, so also bytes).
pub const MAX_KEY_LENGTH: usize = 255;

/// How long a claim of a request still running protects it, in seconds. The node doing the work
/// renews the claim every [`RENEW_SECONDS`] while it works, so a claim older than this is a
/// node's that stopped mid-request, and a retry takes it over.
pub const LEASE_SECONDS: i64 = 60;

/// How often the node doing the work renews its claim: well within [`LEASE_SECONDS`], so a slow
/// request (a stalled database) is not taken over while it still runs.
pub const RENEW_SECONDS: u64 = 15;

/// Shortest allowed lifetime of kept answers, in seconds: at least the lease, so a record
/// never expires while its request may still run.
pub const MIN_TTL_SECONDS: i64 = LEASE_SECONDS;

/// A valid idempotency key: 1 to 255 printable ASCII characters. Its value is a credential of
/// sorts (it opens the kept answer), so `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header's raw bytes; a 400 naming [`HEADER`] when empty, too long or not printable
    /// ASCII (space to `~`).
    pub fn parse(value: &[u8]) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > MAX_KEY_LENGTH {
            return Err(ValidationError::new(
                HEADER,
                format!("must be 1 to {MAX_KEY_LENGTH} characters"),
            ));
        }
        if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(ValidationError::new(
                HEADER,
                "must be printable ASCII characters",
            ));
        }
        let text = std::str::from_utf8(value).expect("printable ASCII is UTF-8");
        Ok(Self(text.to_owned()))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdempotencyKey(<redacted>)")
    }
}

/// Whether an answer of `status` is kept for retries. As with Stripe, only once the work began:
/// a 400 (the request was not understood; likewise 405, a method the route does not have, and
/// 408, 413 and 415, a body not read or not JSON), 401, 403 (not allowed to start), 429 (not
/// started) and any 5xx (the outcome is unknown) are not kept, so a retry runs again.
pub fn is_kept(status: u16) -> bool {
    !(matches!(status, 400 | 401 | 403 | 405 | 408 | 413 | 415 | 429) || status >= 500)
}

/// The caller of an unauthenticated invitation accept: a keyed hash of the invitation token,
/// so only the holder of that invitation can be this caller, and the stored value says nothing
/// of the token.
pub fn invitation_caller(secrets: &ServerSecrets, token: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secrets.idempotency_root());
    let mut context = hmac::Context::with_key(&key);
    context.update(b"keyplane/v1/idempotency/invitation-caller\0");
    context.update(token.as_bytes());
    format!(
        "invitation:{}",
        URL_SAFE_NO_PAD.encode(context.sign().as_ref())
    )
}

/// The keys of one caller's idempotency key, derived once per request with HKDF-SHA-256 from the
/// master key's idempotency secret (salt) and the caller and raw idempotency key (input): the
/// stored hash that finds the record, the key that fingerprints requests, and the key that
/// encrypts the kept answer. Each is a separate HKDF output, so the stored hash reveals nothing
/// of the other two.
pub struct RecordKeys {
    key_hash: [u8; 32],
    request_key: hmac::Key,
    cipher: LessSafeKey,
}

impl fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKeys(<redacted>)")
    }
}

impl RecordKeys {
    pub fn derive(secrets: &ServerSecrets, caller: &str, key: &IdempotencyKey) -> Self {
        let caller_length = u32::try_from(caller.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, secrets.idempotency_root())
            .extract(&[caller_length.as_slice(), caller.as_bytes(), key.as_bytes()].concat());
        let expand = |label: &[u8]| {
            let mut out = [0u8; 32];
            prk.expand(&[label], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut out))
                .expect("32 bytes is a valid HKDF-SHA-256 output length");
            out
        };
        let cipher = UnboundKey::new(&AES_256_GCM, &expand(b"keyplane/v1/idempotency/answer"))
            .expect("32 bytes is an AES-256 key");
        Self {
            key_hash: expand(b"keyplane/v1/idempotency/key-hash"),
            request_key: hmac::Key::new(
                hmac::HMAC_SHA256,
                &expand(b"keyplane/v1/idempotency/request"),
            ),
            cipher: LessSafeKey::new(cipher),
        }
    }

    /// What the record is stored under, with the caller.
    pub fn key_hash(&self) -> [u8; 32] {
        self.key_hash
    }

    /// The request's fingerprint: its method, path and query, and exact body bytes.
    pub fn request_hash(&self, method: &str, target: &str, body: &[u8]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.request_key);
        for part in [method.as_bytes(), target.as_bytes()] {
            context.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            context.update(part);
        }
        context.update(body);
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// Encrypts a kept answer's body: a random nonce, then the ciphertext and tag. The status and
    /// content type are bound as associated data.
    pub fn seal(&self, status: u16, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the CSPRNG works");
        let mut sealed = body.to_vec();
        self.cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(status, content_type)),
                &mut sealed,
            )
            .expect("sealing a bounded buffer succeeds");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The body of a kept answer; `None` when it does not open with these keys (a damaged row).
    pub fn open(&self, status: u16, content_type: Option<&str>, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .cipher
            .open_in_place(
                nonce,
                Aad::from(associated_data(status, content_type)),
                &mut buffer,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

fn associated_data(status: u16, content_type: Option<&str>) -> Vec<u8> {
    let mut data = status.to_be_bytes().to_vec();
    data.extend_from_slice(content_type.unwrap_or("").as_bytes());
    data
}

/// A request's claim on the record `(caller, key_hash)`, as the store takes it.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    /// The API key (`api_key:<id>`), person (`user:<id>`) or invitation holder
    /// ([`invitation_caller`]).
    pub caller: String,
    pub key_hash: [u8; 32],
    pub request_hash: [u8; 32],
    /// This claim's own random id: only its holder completes or releases the record.
    pub claim_id: String,
    pub now: i64,
    /// A running claim made at or before this is stale (its node stopped) and may be taken over.
    pub stale_before: i64,
    /// When the record expires if it is not completed.
    pub expires_at: i64,
}

impl IdempotencyClaim {
    pub fn new(
        caller: String,
        keys: &RecordKeys,
        request_hash: [u8; 32],
        now: i64,
        ttl: i64,
    ) -> Self {
        Self {
            caller,
            key_hash: keys.key_hash(),
            request_hash,
            claim_id: uuid::Uuid::new_v4().simple().to_string(),
            now,
            stale_before: now - LEASE_SECONDS,
            expires_at: now + ttl.max(MIN_TTL_SECONDS),
        }
    }
}

/// A kept answer as stored: the status, the content type, the encrypted body
/// ([`RecordKeys::seal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub sealed_body: Vec<u8>,
}

/// What claiming an idempotency key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claim is this request's: do the work, then complete or release it.
    Claimed,
    /// The same request is being served (its claim is not stale yet).
    InProgress,
    /// The key was used for another method, path or body.
    Mismatch,
    /// The same request was served; here is its answer.
    Completed(KeptAnswer),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MasterKey;

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"order 42 ~!").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        for bad in [
            &b""[..],
            &[b'k'; 256][..],
            b"tab\there",
            b"nul\0",
            b"del\x7f",
            "caf\u{e9}".as_bytes(),
        ] {
            let error = IdempotencyKey::parse(bad).unwrap_err();
            assert_eq!(error.field, HEADER, "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", IdempotencyKey::parse(b"secret-ish").unwrap()),
            "IdempotencyKey(<redacted>)"
        );
    }

    #[test]
    fn only_answers_of_work_begun_are_kept() {
        for kept in [200, 201, 404, 409, 410, 422] {
            assert!(is_kept(kept), "{kept}");
        }
        for not_kept in [400, 401, 403, 405, 408, 413, 415, 429, 500, 502, 503, 504] {
            assert!(!is_kept(not_kept), "{not_kept}");
        }
    }

    #[test]
    fn records_are_keyed_by_master_key_caller_and_idempotency_key() {
        let secrets = MasterKey::generate().derive();
        let key = IdempotencyKey::parse(b"k-1").unwrap();
        let keys = RecordKeys::derive(&secrets, "api_key:1", &key);
        let same = RecordKeys::derive(&secrets, "api_key:1", &key);
        assert_eq!(keys.key_hash(), same.key_hash());
        assert_eq!(
            keys.request_hash("POST", "/a", b"{}"),
            same.request_hash("POST", "/a", b"{}")
        );
        let others = [
            RecordKeys::derive(&secrets, "api_key:2", &key),
            RecordKeys::derive(
                &secrets,
                "api_key:1",
                &IdempotencyKey::parse(b"k-2").unwrap(),
            ),
            RecordKeys::derive(&MasterKey::generate().derive(), "api_key:1", &key),
        ];
        for other in &others {
            assert_ne!(keys.key_hash(), other.key_hash());
        }
        // The fingerprint covers method, path and body, unambiguously.
        let fingerprint = keys.request_hash("POST", "/a", b"{}");
        for (method, target, body) in [
            ("PUT", "/a", &b"{}"[..]),
            ("POST", "/b", b"{}"),
            ("POST", "/a", b"{} "),
            ("POS", "T/a", b"{}"),
        ] {
            assert_ne!(fingerprint, keys.request_hash(method, target, body));
        }
    }

    #[test]
    fn answers_open_only_with_the_same_master_key_caller_and_idempotency_key() {
        let secrets = MasterKey::generate().derive();
        let key = IdempotencyKey::parse(b"k-1").unwrap();
        let keys = RecordKeys::derive(&secrets, "user:1", &key);
        let body = br#"{"secret":"s3cr3t"}"#;
        let sealed = keys.seal(200, Some("application/json"), body);
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(
            keys.open(200, Some("application/json"), &sealed).unwrap(),
            body
        );
        assert!(keys.open(404, Some("application/json"), &sealed).is_none());
        assert!(keys.open(200, None, &sealed).is_none());
        assert!(
            RecordKeys::derive(&secrets, "user:1", &IdempotencyKey::parse(b"k-2").unwrap())
                .open(200, Some("application/json"), &sealed)
                .is_none()
        );
        assert!(
            RecordKeys::derive(&MasterKey::generate().derive(), "user:1", &key)
                .open(200, Some("application/json"), &sealed)
                .is_none()
        );
        assert!(
            keys.open(200, Some("application/json"), &sealed[..5])
                .is_none()
        );
    }

    #[test]
    fn invitation_callers_depend_on_the_token_and_hide_it() {
        let secrets = MasterKey::generate().derive();
        let caller = invitation_caller(&secrets, "tok.abc");
        assert!(caller.starts_with("invitation:"));
        assert!(!caller.contains("abc"));
        assert_eq!(caller, invitation_caller(&secrets, "tok.abc"));
        assert_ne!(caller, invitation_caller(&secrets, "tok.abd"));
    }
}
