-- Web console sessions. The cookie holds a random id; only its keyed hash is stored, so a copy
-- of the database opens no session. Every node reads the same rows, so signing out (or out
-- everywhere) ends a session on all of them.
CREATE TABLE console_sessions (
    id_hash         BLOB PRIMARY KEY,
    user_id         TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    token_version   BIGINT NOT NULL,
    csrf_token      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Password reset links: one row per person (a new request replaces the last), the token's keyed
-- hash only, usable once until it expires.
CREATE TABLE password_resets (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
