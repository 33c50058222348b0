-- A hard end for a refresh-token family, inherited by every token refreshed from it: set when an
-- API key's secret is rotated (the families of the old secret end with its grace period) and for
-- logins with a previous secret during that grace period.
ALTER TABLE refresh_tokens ADD COLUMN family_expires_at BIGINT;
