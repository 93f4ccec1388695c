-- Read model "audit_order": the order in which auditors read the log. Each event gets a dense
-- position, numbered along the projector engine's commit-safe visiting order, so positions only grow
-- as events become visible and a rebuild numbers every event the same way.
CREATE TABLE audit_order
(
    position        BIGINT NOT NULL PRIMARY KEY,
    global_position BIGINT NOT NULL UNIQUE,
    aggregate_type  TEXT   NOT NULL,
    aggregate_id    TEXT   NOT NULL
);

CREATE INDEX audit_order_type ON audit_order (aggregate_type, position);
CREATE INDEX audit_order_aggregate ON audit_order (aggregate_id, position);
