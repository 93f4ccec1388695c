-- Operational data kept outside the log: the HMAC of each key's secret (looked up by the public
-- prefix), and when each key was last used (refreshed at most once a minute).
CREATE TABLE api_key_secrets
(
    api_key_id  TEXT NOT NULL PRIMARY KEY,
    key_prefix  TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_key_usage
(
    api_key_id   TEXT NOT NULL PRIMARY KEY,
    last_used_at TEXT NOT NULL
);

-- Read models (projection "api_keys").
CREATE TABLE api_keys
(
    api_key_id          TEXT NOT NULL PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    name                TEXT NOT NULL,
    key_prefix          TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    dataset_access_mode TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    expires_at          TEXT,
    revoked_at          TEXT
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at, api_key_id);

CREATE TABLE api_key_grants
(
    grant_id   TEXT NOT NULL PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX api_key_grants_key ON api_key_grants (api_key_id, created_at, grant_id);
CREATE INDEX api_key_grants_dataset ON api_key_grants (dataset_id);
