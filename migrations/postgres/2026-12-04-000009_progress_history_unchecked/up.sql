-- Progress history rows are written only in the same transaction as the update that proves
-- their job exists (the end of an attempt, a cancel), and deleted with their job by cleanup,
-- so the foreign key checked nothing the writer does not already ensure, at the cost of one
-- row-locking lookup of the job per inserted row (about ten per job).
ALTER TABLE job_progress_events DROP CONSTRAINT IF EXISTS job_progress_events_job_id_fkey;
