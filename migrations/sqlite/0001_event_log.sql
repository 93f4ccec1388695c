-- The append-only event log. The first seven columns are the ones sqlite-es reads and writes;
-- global_position is ours: set by the trigger below at insert. SQLite has one writer, so this
-- is commit order.
CREATE TABLE events
(
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    sequence        INTEGER NOT NULL CHECK (sequence >= 0),
    event_type      TEXT    NOT NULL,
    event_version   TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    global_position INTEGER,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);

CREATE TRIGGER events_assign_global_position AFTER INSERT ON events
BEGIN
    UPDATE events
    SET global_position = (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events)
    WHERE rowid = NEW.rowid;
END;

-- A stored event is never edited or removed.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
WHEN OLD.global_position IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- One row per projection: where it is in the log and whether it stopped on an error.
CREATE TABLE projection_checkpoints
(
    name            TEXT    NOT NULL PRIMARY KEY,
    version         INTEGER NOT NULL,
    cursor_tx       INTEGER NOT NULL DEFAULT 0,
    cursor_position INTEGER NOT NULL DEFAULT 0,
    position        INTEGER NOT NULL DEFAULT 0,
    events_applied  INTEGER NOT NULL DEFAULT 0,
    failed_position INTEGER,
    error           TEXT,
    updated_at      TEXT    NOT NULL
);
