-- The stored history of each job's stage changes and milestones (GetJobProgress after the
-- live snapshot expired, ListJobProgressEvents). `event` is an encoded llmjobs.v1.ProgressEvent.
CREATE TABLE job_progress_events (
    id       bigserial PRIMARY KEY,
    job_id   uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt  integer NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('stage_changed', 'milestone')),
    name     text NOT NULL,
    time     timestamptz NOT NULL,
    event    bytea NOT NULL
);
CREATE INDEX job_progress_events_job ON job_progress_events (job_id, id);

-- Details of the final attempt: prompt-cache and reasoning tokens as reported upstream,
-- stream statistics, the upstream's request id and the parsed structured output.
ALTER TABLE job_results
    ADD COLUMN cached_input_tokens bigint,
    ADD COLUMN reasoning_tokens bigint,
    ADD COLUMN stream_chunks bigint NOT NULL DEFAULT 0,
    ADD COLUMN stream_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN inter_token_p50_ms double precision,
    ADD COLUMN inter_token_p95_ms double precision,
    ADD COLUMN upstream_request_id text,
    ADD COLUMN structured_output jsonb;

-- The estimate of a job's output looks up recent completed jobs of a job type and model.
CREATE INDEX jobs_recent_completed ON jobs (job_type, model, finished_at DESC) WHERE status = 'completed';
