-- API keys carry a role (admin, developer or viewer); keys made before roles existed act as
-- admins, as they always did.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
-- Each rotation of a key's secret counts up its generation. A refresh token of an API key
-- records the generation of the secret it was obtained with, so whether its family may go on
-- is decided from the key's state when it is presented, whatever a concurrent rotation did
-- between the login's check of the secret and the token's insert.
ALTER TABLE api_keys ADD COLUMN secret_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN key_generation BIGINT;
-- The version of a key's or a membership's tokens: each disable counts it up, and a membership
-- starts at a random version, so tokens issued before a disable, or to an earlier membership of
-- the same person, stay dead when the key or person is enabled or added again. Tokens record
-- the version they were issued under.
ALTER TABLE api_keys ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE memberships ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN subject_token_version BIGINT NOT NULL DEFAULT 0;
-- The names an inviter gave, shown while the invitation is pending, so that inviting an address
-- reveals nothing about whether or as whom it exists elsewhere.
ALTER TABLE memberships ADD COLUMN invited_first_name TEXT;
ALTER TABLE memberships ADD COLUMN invited_last_name TEXT;
