CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (id DESC);
