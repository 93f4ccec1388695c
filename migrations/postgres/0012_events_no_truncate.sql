-- TRUNCATE skips row triggers, so the append-only rule of 0001 needs a statement-level trigger of
-- its own: a stored event is not removed by emptying the table either.
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
