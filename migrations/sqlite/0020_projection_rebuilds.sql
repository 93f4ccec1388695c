-- Operational: the online rebuild of read models (projections/src/engine/online.rs). One row, the
-- current or the last rebuild: it is also the lease that lets one rebuild run at a time across a
-- fleet (a holder that stops renewing it loses it once `expires_ms` has passed). Not part of the
-- log or a read model.
CREATE TABLE projection_rebuilds
(
    slot        INTEGER NOT NULL PRIMARY KEY CHECK (slot = 1),
    holder      TEXT    NOT NULL,
    projections TEXT    NOT NULL,
    phase       TEXT    NOT NULL,
    done        BIGINT  NOT NULL,
    total       BIGINT  NOT NULL,
    started_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT  NOT NULL,
    error       TEXT
);

-- A request that every instance rebuild its own search index (projections rebuild search|--all),
-- numbered; each instance keeps the number it last handled beside its index.
CREATE TABLE search_rebuild_requests
(
    id           BIGINT NOT NULL PRIMARY KEY,
    requested_at TEXT   NOT NULL
);
