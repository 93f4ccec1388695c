-- Read model of metered accesses (projection "accesses"): one row per charge.
CREATE TABLE accesses
(
    access_id          TEXT   NOT NULL PRIMARY KEY,
    kind               TEXT   NOT NULL,
    buyer_tenant_id    TEXT   NOT NULL,
    provider_tenant_id TEXT   NOT NULL,
    dataset_id         TEXT   NOT NULL,
    object_id          TEXT   NOT NULL,
    api_key_id         TEXT,
    search_activity_id TEXT,
    charged_micros     BIGINT NOT NULL,
    fee_bps            BIGINT NOT NULL,
    occurred_at        TEXT   NOT NULL
);

CREATE INDEX accesses_buyer ON accesses (buyer_tenant_id, occurred_at, access_id);
CREATE INDEX accesses_provider ON accesses (provider_tenant_id, occurred_at);
