-- Personal data in the log is sealed per data subject (a user, or an API key for the searches it
-- ran; see projections::privacy). Each subject's AES-256-GCM key, as lowercase hex, is kept here,
-- beside the log as password hashes are; erasure sets it to NULL for good.
CREATE TABLE subject_keys
(
    subject_id TEXT NOT NULL PRIMARY KEY,
    data_key   TEXT,
    created_at TEXT NOT NULL,
    erased_at  TEXT
);

-- Read model "users": when the user's personal data was erased.
ALTER TABLE users ADD COLUMN erased_at TEXT;

-- Read model "searches": the data subject of each query text, so erasure finds them.
ALTER TABLE search_activities ADD COLUMN subject_id TEXT;
ALTER TABLE search_appearances ADD COLUMN subject_id TEXT;
CREATE INDEX search_activities_subject ON search_activities (subject_id);
CREATE INDEX search_appearances_subject ON search_appearances (subject_id);

-- Heads signed over the log before its personal fields were sealed (the one-time upgrade
-- rewrites those fields, so these heads no longer match the tree; kept for the record).
CREATE TABLE audit_heads_before_sealing
(
    tree_size BIGINT NOT NULL PRIMARY KEY,
    root_hash TEXT   NOT NULL,
    signed_at TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    signature TEXT   NOT NULL
);
