-- One row that /readyz rewrites (at most once a second) to learn whether the store can still
-- write: a full disk or a read-only file system answers reads but not writes.
CREATE TABLE readiness_probe (
    id         INTEGER PRIMARY KEY,
    checked_at BIGINT NOT NULL
);
INSERT INTO readiness_probe (id, checked_at) VALUES (1, 0);
