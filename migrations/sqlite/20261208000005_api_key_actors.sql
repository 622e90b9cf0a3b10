-- Who created and who revoked each API key: `cli` (the operator), `api_key:<id>` (a key with
-- api_keys:write) or `user:<id>` (a dashboard member). NULL for keys from before this record was
-- kept. The outbox's api_key.created / api_key.revoked events carry the same words.
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
ALTER TABLE api_keys ADD COLUMN revoked_by TEXT;
