-- Operational: the `login` aggregate each session opened by login records itself as, so that its
-- logout closes the same one. Null for sessions opened before logins had aggregates of their own
-- (and for those signup opens, which record no login).
ALTER TABLE sessions ADD COLUMN login_id TEXT;
