-- Read model "audit_tree" (kept by the audit_order projection): the RFC 6962 Merkle tree over the
-- audit order. Row (level, idx) is the root of leaves idx*2^level .. (idx+1)*2^level - 1 (0-based;
-- leaf n of the audit order is idx n-1 at level 0), as lowercase hex of its SHA-256.
CREATE TABLE audit_tree
(
    level BIGINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  TEXT   NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed tree heads kept every 10,000 events and hourly (GET /v1/admin/audit/heads).
CREATE TABLE audit_heads
(
    tree_size BIGINT NOT NULL PRIMARY KEY,
    root_hash TEXT   NOT NULL,
    signed_at TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    signature TEXT   NOT NULL
);
