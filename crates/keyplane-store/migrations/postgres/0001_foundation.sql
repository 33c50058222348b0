-- The foundation of Keyplane's data model: organizations, people and their memberships,
-- invitations, API keys and the append-only audit log. Ids are UUID text, times unix seconds,
-- metadata JSON text, so that every query is the same SQL on SQLite and PostgreSQL.

CREATE TABLE organizations (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    display_name       TEXT,
    address_line1      TEXT,
    address_line2      TEXT,
    zip                TEXT,
    town               TEXT,
    state              TEXT,
    country_code       TEXT,
    vat_id             TEXT,
    tax_number         TEXT,
    economy_id         TEXT,
    contact_person_id  TEXT,
    billing_address_id TEXT,
    metadata           TEXT NOT NULL DEFAULT '{}',
    managed_by         TEXT REFERENCES organizations (id),
    envs               TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    created_by_user    TEXT
);
CREATE INDEX organizations_managed_by ON organizations (managed_by);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    password_hash TEXT,
    created_at    BIGINT NOT NULL
);
-- One person per address, whatever its case.
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE memberships (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id         TEXT NOT NULL REFERENCES users (id),
    role            TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE invitations (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id         TEXT NOT NULL REFERENCES users (id),
    token_hash      BYTEA NOT NULL UNIQUE,
    invited_by      TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    accepted_at     BIGINT,
    revoked_at      BIGINT
);
CREATE INDEX invitations_organization ON invitations (organization_id, id);

CREATE TABLE api_keys (
    id                         TEXT PRIMARY KEY,
    organization_id            TEXT NOT NULL REFERENCES organizations (id),
    name                       TEXT NOT NULL,
    kind                       TEXT NOT NULL,
    status                     TEXT NOT NULL,
    public_key                 TEXT NOT NULL UNIQUE,
    secret_hash                BYTEA NOT NULL,
    previous_secret_hash       BYTEA,
    previous_secret_expires_at BIGINT,
    metadata                   TEXT NOT NULL DEFAULT '{}',
    created_at                 BIGINT NOT NULL,
    created_by_user            TEXT,
    last_used_at               BIGINT,
    expires_at                 BIGINT,
    UNIQUE (organization_id, name)
);

CREATE TABLE audit_events (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    action          TEXT NOT NULL,
    actor_type      TEXT NOT NULL,
    actor_id        TEXT,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    request_id      TEXT,
    ip              TEXT,
    created_at      BIGINT NOT NULL
);
-- Ids are UUID v7, so id order is time order: newest first is a backwards index scan.
CREATE INDEX audit_events_organization ON audit_events (organization_id, id);

-- A single row once `keyplane bootstrap` has run: two concurrent bootstraps cannot both win.
CREATE TABLE bootstrap (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    done_at BIGINT NOT NULL
);

-- The audit log is append-only, whatever code runs against the database.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
