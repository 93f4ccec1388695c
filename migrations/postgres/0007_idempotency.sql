-- Operational: Idempotency-Key records, per credential, kept 24 h (SPEC §1.9).
CREATE TABLE idempotency_keys
(
    scope        TEXT   NOT NULL,
    idem_key     TEXT   NOT NULL,
    request_hash TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    status       BIGINT,
    headers      TEXT,
    body         TEXT,
    created_at   TEXT   NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
