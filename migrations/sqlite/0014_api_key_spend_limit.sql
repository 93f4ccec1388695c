-- A key's optional monthly spend limit in micro-USD (NULL: none), from ApiKeyCreated. Keys made
-- before limits existed have none, so the read model needs no rebuild.
ALTER TABLE api_keys ADD COLUMN spend_limit_micros BIGINT;
