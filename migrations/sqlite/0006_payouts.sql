-- Read model of payout statements (projection "payouts"): one row per provider tenant per UTC month.
-- fee_basis = Σ amount_micros × fee_bps; the fee is round6(fee_basis / 10000).
CREATE TABLE payout_statements
(
    statement_id TEXT   NOT NULL PRIMARY KEY,
    tenant_id    TEXT   NOT NULL,
    period_start TEXT   NOT NULL,
    period_end   TEXT   NOT NULL,
    gross_micros BIGINT NOT NULL,
    fee_basis    BIGINT NOT NULL,
    line_count   BIGINT NOT NULL,
    paid_at      TEXT
);

CREATE INDEX payout_statements_tenant ON payout_statements (tenant_id, period_start);
CREATE INDEX payout_statements_period ON payout_statements (period_start, statement_id);
