-- Payout statements keep their sums exactly. Σ amount × fee bps passes 64 bits after 462
-- downloads at the highest price (20 % fee), and SQL integers here are 64-bit, so the gross and
-- the fee basis are each kept as three sums of 21-bit limbs (aggregates::money::Limbs): every
-- limb sum stays far inside a BIGINT, and the service joins them into an exact 128-bit sum.
-- The payouts projection's version moves to 3, so this table is refilled from the log.
DROP TABLE payout_statements;

CREATE TABLE payout_statements
(
    statement_id TEXT   NOT NULL PRIMARY KEY,
    tenant_id    TEXT   NOT NULL,
    period_start TEXT   NOT NULL,
    period_end   TEXT   NOT NULL,
    gross_l2     BIGINT NOT NULL,
    gross_l1     BIGINT NOT NULL,
    gross_l0     BIGINT NOT NULL,
    fee_basis_l2 BIGINT NOT NULL,
    fee_basis_l1 BIGINT NOT NULL,
    fee_basis_l0 BIGINT NOT NULL,
    line_count   BIGINT NOT NULL,
    paid_at      TEXT
);

CREATE INDEX payout_statements_tenant ON payout_statements (tenant_id, period_start);
CREATE INDEX payout_statements_period ON payout_statements (period_start, statement_id);
