-- Refresh tokens are `<id>.<secret>` and are looked up by their time-ordered id, so each insert
-- appends to the table's indexes instead of dirtying a random page of an index on hashes. The
-- keyed hash of the whole token is still what is stored, and is compared in constant time.
-- Tokens issued before this change cannot be presented any more: they are removed (their
-- holders log in again with their key and secret or password).
DELETE FROM refresh_tokens;
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_token_hash_key;
