-- Token issuance: Ed25519 signing keys (private halves encrypted under the master key) and
-- refresh tokens (keyed hashes only), grouped in families for reuse detection.

CREATE TABLE signing_keys (
    kid                   TEXT PRIMARY KEY,
    encrypted_private_key BLOB NOT NULL,
    public_key            BLOB NOT NULL,
    created_at            BIGINT NOT NULL,
    retired_at            BIGINT
);

CREATE TABLE refresh_tokens (
    id              TEXT PRIMARY KEY,
    family_id       TEXT NOT NULL,
    token_hash      BLOB NOT NULL UNIQUE,
    subject_type    TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    env             TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT,
    revoked_at      BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (subject_id);
