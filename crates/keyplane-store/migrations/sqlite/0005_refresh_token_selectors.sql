-- Refresh tokens are `<id>.<secret>` and are looked up by their time-ordered id, so each insert
-- appends to the table's indexes instead of dirtying a random page of an index on hashes. The
-- keyed hash of the whole token is still what is stored, and is compared in constant time.
-- Tokens issued before this change cannot be presented any more: they are removed (their
-- holders log in again with their key and secret or password).
DROP TABLE refresh_tokens;
CREATE TABLE refresh_tokens (
    id                TEXT PRIMARY KEY,
    family_id         TEXT NOT NULL,
    token_hash        BLOB NOT NULL,
    subject_type      TEXT NOT NULL,
    subject_id        TEXT NOT NULL,
    organization_id   TEXT NOT NULL,
    env               TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_at           BIGINT,
    revoked_at        BIGINT,
    family_expires_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (subject_id);
