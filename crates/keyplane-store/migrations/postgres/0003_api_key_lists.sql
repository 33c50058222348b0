-- API key lists: one index per sort order, so a page is an index range scan whatever the number
-- of keys, and per-organization counts by kind and status, kept in the same transaction as every
-- change, so `count` never scans.

CREATE INDEX api_keys_by_created ON api_keys (organization_id, created_at, id);
CREATE INDEX api_keys_by_kind ON api_keys (organization_id, kind, name);
CREATE INDEX api_keys_by_status ON api_keys (organization_id, status, name);

CREATE TABLE api_key_counts (
    organization_id TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (organization_id, kind, status)
);

INSERT INTO api_key_counts (organization_id, kind, status, n)
SELECT organization_id, kind, status, COUNT(*) FROM api_keys GROUP BY organization_id, kind, status;
