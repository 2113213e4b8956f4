-- Failed jobs that an operator removed from the failed list (rows are kept).
ALTER TABLE jobs ADD COLUMN forgotten_at timestamptz;
CREATE INDEX jobs_failed ON jobs (id DESC) WHERE status = 'failed' AND forgotten_at IS NULL;
