-- Who created each key: a key created by a key is revoked with it, and works only while it does.
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
CREATE INDEX api_keys_created_by ON api_keys (created_by);
