-- Idempotency-Key records (contract §12): one per caller and keyed hash of the idempotency key
-- (the key itself is never stored). A request claims its row with one INSERT … ON CONFLICT DO
-- NOTHING, so of concurrent requests on any number of nodes exactly one does the work; the
-- answer it keeps is encrypted under a key derived from the master key and the idempotency key.
CREATE TABLE idempotency_keys (
    caller       TEXT NOT NULL,
    key_hash     BYTEA NOT NULL,
    -- Keyed fingerprint of the method, path and query, and body.
    request_hash BYTEA NOT NULL,
    -- The random id of the claim that owns the row; only its holder completes or releases it.
    claim_id     TEXT NOT NULL,
    -- 'running' or 'complete'.
    state        TEXT NOT NULL,
    claimed_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    status       BIGINT,
    content_type TEXT,
    sealed_body  BYTEA,
    PRIMARY KEY (caller, key_hash)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
