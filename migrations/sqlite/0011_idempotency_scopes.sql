-- Idempotency records keep the scopes the first run required (a replay must still hold them), and
-- are purged by age.
ALTER TABLE idempotency_keys ADD COLUMN required_scopes TEXT;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
