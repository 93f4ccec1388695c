-- Operational data, kept outside the log because it holds secrets; never rebuilt.
CREATE TABLE credentials
(
    user_id       TEXT NOT NULL PRIMARY KEY,
    password_hash TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE sessions
(
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_id);

-- Read models (projections "tenants" and "users").
CREATE TABLE tenants
(
    tenant_id  TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE users
(
    user_id             TEXT   NOT NULL PRIMARY KEY,
    tenant_id           TEXT   NOT NULL,
    email               TEXT   NOT NULL UNIQUE,
    display_name        TEXT   NOT NULL,
    roles               TEXT   NOT NULL,
    is_platform_admin   BIGINT NOT NULL DEFAULT 0,
    login_count         BIGINT NOT NULL DEFAULT 0,
    last_login_at       TEXT,
    password_changed_at TEXT,
    created_at          TEXT   NOT NULL,
    updated_at          TEXT   NOT NULL
);

CREATE INDEX users_tenant ON users (tenant_id);
