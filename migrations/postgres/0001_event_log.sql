-- The append-only event log. The first seven columns are the ones postgres-es reads and writes;
-- the database fills the other two. Transactions commit out of global_position order, so readers
-- order on (transaction_id, global_position) and stop below the oldest running transaction.
CREATE TABLE events
(
    aggregate_type  text   NOT NULL,
    aggregate_id    text   NOT NULL,
    sequence        bigint NOT NULL CHECK (sequence >= 0),
    event_type      text   NOT NULL,
    event_version   text   NOT NULL,
    payload         jsonb  NOT NULL,
    metadata        jsonb  NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8   NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_transaction_order ON events (transaction_id, global_position);

-- Wakes the projection workers of every instance when a transaction that appended events commits.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ipto_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- A stored event is never edited or removed.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- One row per projection: where it is in the log and whether it stopped on an error.
CREATE TABLE projection_checkpoints
(
    name            text   NOT NULL PRIMARY KEY,
    version         bigint NOT NULL,
    cursor_tx       bigint NOT NULL DEFAULT 0,
    cursor_position bigint NOT NULL DEFAULT 0,
    position        bigint NOT NULL DEFAULT 0,
    events_applied  bigint NOT NULL DEFAULT 0,
    failed_position bigint,
    error           text,
    updated_at      text   NOT NULL
);
