-- Tags chosen at submit, for listing; the cost of a job's result in USD (NULL when the model
-- has no known price or the usage was estimated).
ALTER TABLE jobs ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX jobs_tags ON jobs USING gin (tags);
CREATE INDEX jobs_newest ON jobs (id DESC);
ALTER TABLE job_results ADD COLUMN cost_usd double precision;
