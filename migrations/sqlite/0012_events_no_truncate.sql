-- Nothing to do: SQLite has no TRUNCATE, and its truncate optimisation of an unqualified DELETE is
-- off for a table with triggers, so 0001's events_no_delete already refuses emptying the log.
-- The file keeps the two migration sets numbered alike.
SELECT 1;
