-- Read model (projection `members`): who belongs to a tenant with which roles, as the tenant
-- aggregate records them. Tenants created before members were recorded have no row for their
-- founder until it is recorded; their roles are then the `users` row's. A removed member keeps
-- the row with `removed_at` set.
CREATE TABLE members
(
    user_id    TEXT NOT NULL PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    roles      TEXT NOT NULL,
    joined_at  TEXT NOT NULL,
    invited_by TEXT,
    removed_at TEXT
);

CREATE INDEX members_tenant ON members (tenant_id, user_id);

-- Read model (projection `members`): a tenant's invitations. `state` is pending, accepted or
-- revoked; a pending one past `expires_at` reads as expired.
CREATE TABLE invitations
(
    invitation_id TEXT NOT NULL PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    email         TEXT NOT NULL,
    roles         TEXT NOT NULL,
    invited_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    state         TEXT NOT NULL,
    accepted_by   TEXT,
    closed_at     TEXT
);

CREATE INDEX invitations_tenant ON invitations (tenant_id, created_at, invitation_id);

-- Operational: the HMAC of each invitation's token (the token itself is shown once and never
-- stored), written before the invitation's event. Not part of the log or a read model.
CREATE TABLE invitation_tokens
(
    token_hash    TEXT NOT NULL PRIMARY KEY,
    invitation_id TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
