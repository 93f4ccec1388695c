-- Operational: the limits a fleet shares when it has no Redis (src/ratelimit/shared.rs). Neither
-- table is part of the log or a read model: rows age out and are deleted.

-- A request bucket's GCRA state: its theoretical arrival time, in microseconds of the database's
-- clock. A row whose time has passed is back to a whole burst, as good as no row.
CREATE TABLE rate_limit_buckets
(
    bucket TEXT   NOT NULL PRIMARY KEY,
    tat    BIGINT NOT NULL
);

-- Failed logins per address (an HMAC of the normalised e-mail), in milliseconds; the newest ten
-- within fifteen minutes lock the address.
CREATE TABLE login_failures
(
    address   TEXT   NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX login_failures_by_address ON login_failures (address, failed_at);
