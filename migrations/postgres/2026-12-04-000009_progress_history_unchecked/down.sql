DELETE FROM job_progress_events p WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = p.job_id);
ALTER TABLE job_progress_events
    ADD CONSTRAINT job_progress_events_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;
