-- Read models of searches (projection "searches"): one row per search request, and one row per
-- (search, dataset) where another tenant's search returned the dataset — the basis of
-- `search_appearances`, `top_queries` and the demand-curve price.
CREATE TABLE search_activities
(
    search_activity_id TEXT   NOT NULL PRIMARY KEY,
    buyer_tenant_id    TEXT   NOT NULL,
    api_key_id         TEXT,
    query_text         TEXT   NOT NULL,
    dataset_ids        TEXT   NOT NULL,
    result_count       BIGINT NOT NULL,
    charged_micros     BIGINT NOT NULL,
    occurred_at        TEXT   NOT NULL
);

CREATE INDEX search_activities_buyer ON search_activities (buyer_tenant_id, occurred_at, search_activity_id);

CREATE TABLE search_appearances
(
    search_activity_id TEXT NOT NULL,
    dataset_id         TEXT NOT NULL,
    buyer_tenant_id    TEXT NOT NULL,
    query_text         TEXT NOT NULL,
    occurred_at        TEXT NOT NULL,
    PRIMARY KEY (search_activity_id, dataset_id)
);

CREATE INDEX search_appearances_dataset ON search_appearances (dataset_id, occurred_at);
