DROP INDEX jobs_failed;
ALTER TABLE jobs DROP COLUMN forgotten_at;
