-- Per-job limit of one attempt (seconds); NULL means the worker's default.
ALTER TABLE jobs ADD COLUMN timeout_secs integer;
