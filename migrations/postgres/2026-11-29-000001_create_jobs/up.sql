-- Jobs: the source of truth for a job's existence and final state.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    job_type        text NOT NULL,
    priority        text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    queue           text NOT NULL,
    messages        jsonb NOT NULL,
    params          jsonb NOT NULL,
    model           text NOT NULL,
    streaming_mode  text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key text,
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    error_code      text,
    error_message   text,
    last_sequence   bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The reconciler and listings look for unfinished jobs.
CREATE INDEX jobs_unfinished ON jobs (status, created_at) WHERE status IN ('queued', 'running');

-- One result per finished job: content, usage and timings of the final attempt.
CREATE TABLE job_results (
    job_id                   uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content                  text NOT NULL,
    reasoning_content        text NOT NULL DEFAULT '',
    finish_reason            text NOT NULL DEFAULT '',
    model                    text NOT NULL,
    provider                 text NOT NULL,
    simulated                boolean NOT NULL,
    input_tokens             bigint NOT NULL,
    output_tokens            bigint NOT NULL,
    total_tokens             bigint NOT NULL,
    usage_estimated          boolean NOT NULL,
    time_to_first_token_ms   bigint,
    duration_ms              bigint NOT NULL,
    output_tokens_per_second double precision NOT NULL,
    queue_wait_ms            bigint NOT NULL,
    created_at               timestamptz NOT NULL DEFAULT now()
);

-- Every failed attempt with its error, kept for operators and the failed result.
CREATE TABLE job_attempt_failures (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    error_code text NOT NULL,
    message    text NOT NULL,
    retryable  boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
