-- `--prompt-storage none`: a job's conversation is kept only while the job can still run.
-- The worker reads it from here (and a retry reads it again), so it is stored at submit; once
-- the job has ended, by whatever path (the worker, a cancel, a purge, a cancelled batch), this
-- trigger replaces it with an empty conversation in the same UPDATE.
ALTER TABLE jobs ADD COLUMN discard_prompt boolean NOT NULL DEFAULT false;

CREATE FUNCTION jobs_discard_prompt() RETURNS trigger AS $$
BEGIN
    NEW.messages := '[]'::jsonb;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_discard_prompt BEFORE INSERT OR UPDATE ON jobs
    FOR EACH ROW
    WHEN (NEW.discard_prompt AND NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION jobs_discard_prompt();
