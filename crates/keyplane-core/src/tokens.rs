//! Access tokens: EdDSA (Ed25519) JWTs with a `kid`, minted and verified here and nowhere else.
//! Signing keys are stored encrypted (AES-256-GCM under a key derived from the master key), so a
//! database dump alone cannot mint tokens.

use std::collections::HashMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::secrets::ServerSecrets;
use crate::values::{Env, Role};

/// Whom a token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubjectType {
    ApiKey,
    User,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::ApiKey => "API_KEY",
            SubjectType::User => "USER",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "API_KEY" => Some(SubjectType::ApiKey),
            "USER" => Some(SubjectType::User),
            _ => None,
        }
    }
}

/// The claims of an access token (README, "Tokens").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The API key's or user's id.
    pub sub: String,
    /// The organization the token acts for.
    pub organization: String,
    pub env: Env,
    #[serde(rename = "type")]
    pub subject_type: SubjectType,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The role the subject held when the token was issued (an API key's role, a person's role
    /// in the organization). Authorization reads the current role; this tells the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The subject's token version at issue (`ver`): a token from before a disable, or from an
    /// earlier membership, stays dead after the subject is enabled or added again.
    #[serde(rename = "ver", default, skip_serializing_if = "is_zero")]
    pub token_version: i64,
    /// For an API key: the generation of the secret presented (`gen`), so that a token obtained
    /// with a secret that was rotated away ends with it.
    #[serde(rename = "gen", default, skip_serializing_if = "Option::is_none")]
    pub key_generation: Option<i64>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl AccessClaims {
    /// Whether the token may be used at `now` (Unix seconds): from `nbf` until before `exp`
    /// (RFC 7519 §4.1.4), with no leeway, as [`TokenKeys::verify`] checks it.
    pub fn is_current(&self, now: i64) -> bool {
        self.nbf <= now && now < self.exp
    }
}

/// An Ed25519 signing key with its id. The private half never leaves memory unencrypted.
pub struct SigningKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    public_key: Vec<u8>,
    pub created_at: i64,
    /// When it stops signing; it verifies until its last token expires.
    pub retired_at: Option<i64>,
}

/// Seconds between a key's creation and its first signature, so that every node has published it
/// (nodes reload keys more often than this) before any token signed by it reaches a client.
pub const KEY_PROPAGATION_SECONDS: i64 = 10;

/// A signing key as stored: the PKCS#8 document encrypted, the public key in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub encrypted_private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: i64,
    /// Set when a newer key took over; the key stays published until its last token expires.
    pub retired_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("a signing key could not be decrypted: wrong master key or corrupt data")]
    Decrypt,
    #[error("a signing key is malformed")]
    Malformed,
}

fn cipher(secrets: &ServerSecrets) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, secrets.signing_key_encryption_key())
            .expect("a 32-byte AES key"),
    )
}

impl SigningKey {
    pub fn generate(created_at: i64) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).expect("the CSPRNG works");
        let pair =
            Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("a freshly generated key parses");
        Self {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            pkcs8: document.as_ref().to_vec(),
            public_key: pair.public_key().as_ref().to_vec(),
            created_at,
            retired_at: None,
        }
    }

    /// Encrypts the private key for storage; the kid is bound as associated data.
    pub fn seal(&self, secrets: &ServerSecrets) -> StoredSigningKey {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the CSPRNG works");
        let mut sealed = self.pkcs8.clone();
        cipher(secrets)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.kid.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a small buffer succeeds");
        let mut encrypted = nonce.to_vec();
        encrypted.extend_from_slice(&sealed);
        StoredSigningKey {
            kid: self.kid.clone(),
            encrypted_private_key: encrypted,
            public_key: self.public_key.clone(),
            created_at: self.created_at,
            retired_at: self.retired_at,
        }
    }

    pub fn open(
        stored: &StoredSigningKey,
        secrets: &ServerSecrets,
    ) -> Result<Self, SigningKeyError> {
        if stored.encrypted_private_key.len() <= NONCE_LEN {
            return Err(SigningKeyError::Malformed);
        }
        let (nonce, sealed) = stored.encrypted_private_key.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| SigningKeyError::Malformed)?;
        let mut buffer = sealed.to_vec();
        let plain = cipher(secrets)
            .open_in_place(nonce, Aad::from(stored.kid.as_bytes()), &mut buffer)
            .map_err(|_| SigningKeyError::Decrypt)?;
        let pair = Ed25519KeyPair::from_pkcs8(plain).map_err(|_| SigningKeyError::Malformed)?;
        if pair.public_key().as_ref() != stored.public_key.as_slice() {
            return Err(SigningKeyError::Malformed);
        }
        Ok(Self {
            kid: stored.kid.clone(),
            pkcs8: plain.to_vec(),
            public_key: stored.public_key.clone(),
            created_at: stored.created_at,
            retired_at: stored.retired_at,
        })
    }
}

/// One entry of the JWKS document (RFC 8037 OKP key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

pub fn jwk(kid: &str, public_key: &[u8]) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(public_key),
        kid: kid.into(),
        alg: "EdDSA".into(),
        use_: "sig".into(),
    }
}

/// Why a presented access token is not accepted. Callers answer all of them with the same 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRejected {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Signs with the current key and verifies against every published one.
///
/// Verification is jsonwebtoken's. Signing is the JWS compact serialization (RFC 7515 §7.1)
/// over a key pair parsed once: `jsonwebtoken::encode` parses the PKCS#8 document, deriving the
/// public key, on every call, which doubled the cost of each token.
pub struct TokenKeys {
    issuer: String,
    current_kid: String,
    signer: Ed25519KeyPair,
    /// The current key's protected header, base64url-encoded, followed by the `.` separator.
    encoded_header: String,
    decoding: HashMap<String, DecodingKey>,
    published: Vec<Jwk>,
}

impl TokenKeys {
    /// The key set in force at `now`, given every stored key:
    /// - published (and accepted) are the keys not yet retired, and the retired ones for
    ///   `access_ttl` seconds after their retirement, while tokens they signed can still be live
    ///   (plus [`KEY_PROPAGATION_SECONDS`]: a node may sign with a key until it next reloads);
    /// - the signer is the newest unretired key created at least [`KEY_PROPAGATION_SECONDS`] ago,
    ///   or, when none is that old (a fresh install, or a rotation soon after one), the oldest
    ///   unretired key: the one every node has had longest.
    ///
    /// `None` when no key may sign.
    pub fn new(issuer: String, keys: &[SigningKey], now: i64, access_ttl: i64) -> Option<Self> {
        let unretired = || {
            keys.iter()
                .filter(|k| k.retired_at.is_none_or(|at| at > now))
        };
        let order = |k: &&SigningKey| (k.created_at, k.kid.clone());
        let current = unretired()
            .filter(|k| k.created_at <= now - KEY_PROPAGATION_SECONDS)
            .max_by_key(order)
            .or_else(|| unretired().min_by_key(order))?;
        let mut decoding = HashMap::new();
        let mut published = Vec::new();
        for key in keys.iter().filter(|k| {
            k.retired_at
                .is_none_or(|at| at + access_ttl + KEY_PROPAGATION_SECONDS > now)
        }) {
            let jwk = jwk(&key.kid, &key.public_key);
            let decoding_key = DecodingKey::from_ed_components(&jwk.x).ok()?;
            decoding.insert(key.kid.clone(), decoding_key);
            published.push(jwk);
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(current.kid.clone());
        let mut encoded_header =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("a header serializes"));
        encoded_header.push('.');
        Some(Self {
            issuer,
            current_kid: current.kid.clone(),
            signer: Ed25519KeyPair::from_pkcs8(&current.pkcs8).ok()?,
            encoded_header,
            decoding,
            published,
        })
    }

    /// Whether `kid` is one of the published keys.
    pub fn knows(&self, kid: &str) -> bool {
        self.decoding.contains_key(kid)
    }

    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn jwks(&self) -> &[Jwk] {
        &self.published
    }

    pub fn sign(&self, claims: &AccessClaims) -> String {
        let claims = serde_json::to_vec(claims).expect("claims serialize");
        let mut token =
            String::with_capacity(self.encoded_header.len() + claims.len() * 4 / 3 + 90);
        token.push_str(&self.encoded_header);
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self.signer.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        token
    }

    /// Verifies signature, algorithm (EdDSA only: `none` and HMAC confusion are impossible),
    /// issuer, `exp` and `nbf`, with no leeway.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejected::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenRejected::Invalid("algorithm".into()));
        }
        let kid = header.kid.ok_or(TokenRejected::Malformed)?;
        let key = self.decoding.get(&kid).ok_or(TokenRejected::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenRejected::Invalid(e.to_string()))?;
        // jsonwebtoken still accepts a token in its `exp` second; RFC 7519 does not.
        if !claims.is_current(crate::time::now_unix()) {
            return Err(TokenRejected::Invalid("expired".into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MasterKey;

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://keyplane.test".into(),
            sub: "key".into(),
            organization: "org".into(),
            env: Env::Test,
            subject_type: SubjectType::ApiKey,
            iat: now,
            nbf: now,
            exp: now + 300,
            jti: "j".into(),
            role: None,
            token_version: 0,
            key_generation: None,
        }
    }

    fn now() -> i64 {
        crate::time::now_unix()
    }

    #[test]
    fn signed_tokens_verify_and_carry_the_kid() {
        let key = SigningKey::generate(1);
        let keys = TokenKeys::new("https://keyplane.test".into(), &[key], now(), 300).unwrap();
        let token = keys.sign(&claims(now()));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(keys.current_kid()));
        assert_eq!(keys.verify(&token).unwrap(), claims_with(&token));
    }

    #[test]
    fn tokens_verify_against_the_published_jwk_alone() {
        let keys = TokenKeys::new(
            "https://keyplane.test".into(),
            &[SigningKey::generate(1)],
            now(),
            300,
        )
        .unwrap();
        let signed = claims(now());
        let token = keys.sign(&signed);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let jwk = &keys.jwks()[0];
        let decoding = DecodingKey::from_ed_components(&jwk.x).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["https://keyplane.test"]);
        let decoded = jsonwebtoken::decode::<AccessClaims>(&token, &decoding, &validation).unwrap();
        assert_eq!(decoded.claims, signed);
    }

    fn claims_with(token: &str) -> AccessClaims {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn rejects_expired_tampered_foreign_and_unsigned_tokens() {
        let keys = TokenKeys::new(
            "https://keyplane.test".into(),
            &[SigningKey::generate(1)],
            now(),
            300,
        )
        .unwrap();
        let mut expired = claims(now() - 1000);
        expired.exp = now() - 1;
        assert!(keys.verify(&keys.sign(&expired)).is_err());

        let token = keys.sign(&claims(now()));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims(now());
        forged.organization = "other".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(keys.verify(&parts.join(".")).is_err());

        let unsigned_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{unsigned_header}.{}.", parts[1]);
        assert!(keys.verify(&unsigned).is_err());

        let other = TokenKeys::new(
            "https://keyplane.test".into(),
            &[SigningKey::generate(1)],
            now(),
            300,
        )
        .unwrap();
        assert_eq!(other.verify(&token), Err(TokenRejected::UnknownKey));

        assert!(TokenKeys::new("https://keyplane.test".into(), &[], now(), 300).is_none());
    }

    #[test]
    fn rejects_a_token_of_another_issuer_even_with_the_same_key() {
        let secrets = MasterKey::generate().derive();
        let stored = SigningKey::generate(1).seal(&secrets);
        let ours = TokenKeys::new(
            "https://keyplane.test".into(),
            &[SigningKey::open(&stored, &secrets).unwrap()],
            now(),
            300,
        )
        .unwrap();
        let theirs = TokenKeys::new(
            "https://elsewhere".into(),
            &[SigningKey::open(&stored, &secrets).unwrap()],
            now(),
            300,
        )
        .unwrap();
        let foreign = theirs.sign(&AccessClaims {
            iss: "https://elsewhere".into(),
            ..claims(now())
        });
        assert!(matches!(
            ours.verify(&foreign),
            Err(TokenRejected::Invalid(_))
        ));
    }

    #[test]
    fn the_newest_key_signs_and_older_keys_still_verify() {
        let old = SigningKey::generate(1);
        let only_old = TokenKeys::new("i".into(), std::slice::from_ref(&old), now(), 300).unwrap();
        let old_token = only_old.sign(&AccessClaims {
            iss: "i".into(),
            ..claims(now())
        });
        let new = SigningKey::generate(2);
        let new_kid = new.kid.clone();
        let both = TokenKeys::new("i".into(), &[old, new], now(), 300).unwrap();
        assert_eq!(both.current_kid(), new_kid);
        assert!(both.verify(&old_token).is_ok());
        assert_eq!(both.jwks().len(), 2);
    }

    #[test]
    fn a_rotation_publishes_first_switches_later_and_retires_after_the_token_lifetime() {
        let mut old = SigningKey::generate(0);
        let new = SigningKey::generate(1000);
        old.retired_at = Some(1000 + KEY_PROPAGATION_SECONDS);
        let (old_kid, new_kid) = (old.kid.clone(), new.kid.clone());
        let at = |now: i64| {
            let keys = [
                SigningKey::open(&old.seal(&test_secrets()), &test_secrets()).unwrap(),
                SigningKey::open(&new.seal(&test_secrets()), &test_secrets()).unwrap(),
            ];
            TokenKeys::new("i".into(), &keys, now, 300).unwrap()
        };
        // Published at once, but the old key signs until every node has seen the new one.
        let early = at(1005);
        assert_eq!(early.current_kid(), old_kid);
        assert!(early.knows(&new_kid) && early.knows(&old_kid));
        // Then the new key signs and the old one still verifies its live tokens.
        let switched = at(1000 + KEY_PROPAGATION_SECONDS);
        assert_eq!(switched.current_kid(), new_kid);
        assert!(switched.knows(&old_kid));
        let token = at(1005).sign(&AccessClaims {
            iss: "i".into(),
            ..claims(now())
        });
        assert!(switched.verify(&token).is_ok());
        // Once its last token has expired, the old key is gone: nothing it signs verifies.
        let later = at(1000 + 2 * KEY_PROPAGATION_SECONDS + 300);
        assert!(at(1000 + 2 * KEY_PROPAGATION_SECONDS + 299).knows(&old_kid));
        assert!(!later.knows(&old_kid));
        assert_eq!(later.jwks().len(), 1);
        assert_eq!(later.verify(&token), Err(TokenRejected::UnknownKey));
    }

    fn test_secrets() -> ServerSecrets {
        static KEY: std::sync::OnceLock<MasterKey> = std::sync::OnceLock::new();
        KEY.get_or_init(MasterKey::generate).derive()
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_master_key() {
        let secrets = MasterKey::generate().derive();
        let key = SigningKey::generate(5);
        let stored = key.seal(&secrets);
        assert!(
            !stored
                .encrypted_private_key
                .windows(key.pkcs8.len())
                .any(|w| w == key.pkcs8)
        );
        let opened = SigningKey::open(&stored, &secrets).unwrap();
        assert_eq!(opened.pkcs8, key.pkcs8);
        let stranger = MasterKey::generate().derive();
        assert!(matches!(
            SigningKey::open(&stored, &stranger),
            Err(SigningKeyError::Decrypt)
        ));
        let mut relabelled = stored.clone();
        relabelled.kid = "other".into();
        assert!(SigningKey::open(&relabelled, &secrets).is_err());
    }
}
