ALTER TABLE job_results DROP COLUMN cost_usd;
DROP INDEX jobs_newest;
DROP INDEX jobs_tags;
ALTER TABLE jobs DROP COLUMN tags;
