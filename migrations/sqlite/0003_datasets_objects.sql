-- Read models of datasets and objects (projections "datasets", "objects", "entitlements").
CREATE TABLE datasets
(
    dataset_id          TEXT   NOT NULL PRIMARY KEY,
    tenant_id           TEXT   NOT NULL,
    name                TEXT   NOT NULL,
    description         TEXT   NOT NULL,
    source_modality     TEXT   NOT NULL,
    monetization_mode   TEXT   NOT NULL,
    pricing_model       TEXT   NOT NULL,
    visibility          TEXT   NOT NULL,
    status              TEXT   NOT NULL,
    price_micros        BIGINT NOT NULL,
    object_count        BIGINT NOT NULL DEFAULT 0,
    active_object_count BIGINT NOT NULL DEFAULT 0,
    storage_bytes       BIGINT NOT NULL DEFAULT 0,
    created_at          TEXT   NOT NULL,
    updated_at          TEXT   NOT NULL
);

CREATE INDEX datasets_tenant_created ON datasets (tenant_id, created_at, dataset_id);
CREATE INDEX datasets_catalog ON datasets (status, visibility, created_at, dataset_id);

CREATE TABLE objects
(
    object_id         TEXT   NOT NULL PRIMARY KEY,
    dataset_id        TEXT   NOT NULL,
    tenant_id         TEXT   NOT NULL,
    filename          TEXT   NOT NULL,
    content_type      TEXT   NOT NULL,
    size_bytes        BIGINT NOT NULL,
    declared_sha256   TEXT,
    checksum_sha256   TEXT,
    metadata          TEXT   NOT NULL,
    status            TEXT   NOT NULL,
    review_state      TEXT,
    rejection_reason  TEXT,
    created_at        TEXT   NOT NULL,
    uploaded_at       TEXT,
    review_expires_at TEXT,
    reviewed_at       TEXT,
    approved_at       TEXT,
    updated_at        TEXT   NOT NULL
);

CREATE INDEX objects_dataset_created ON objects (dataset_id, created_at, object_id);
CREATE INDEX objects_review_queue ON objects (status, uploaded_at, object_id);

CREATE TABLE entitlements
(
    dataset_id TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, tenant_id)
);

CREATE INDEX entitlements_tenant ON entitlements (tenant_id);
