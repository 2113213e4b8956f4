-- The embedded store: the Postgres schema (migrations/postgres/) in one step, in SQLite's
-- types. Ids are hyphenated lowercase UUIDs as text (version 7 ids sort by time as text too);
-- times are microseconds since the Unix epoch (UTC) as integers, defaulting to now; JSON is
-- text; booleans are 0/1. Foreign keys need `PRAGMA foreign_keys = ON`, which the store sets on every connection.

CREATE TABLE batches (
    id              text PRIMARY KEY NOT NULL,
    display_name    text NOT NULL DEFAULT '',
    metadata        text NOT NULL DEFAULT '{}',
    idempotency_key text,
    created_at      integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    tenant          text NOT NULL DEFAULT 'default'
);
CREATE UNIQUE INDEX batches_idempotency_key ON batches (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE jobs (
    id              text PRIMARY KEY NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    job_type        text NOT NULL,
    priority        text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    queue           text NOT NULL,
    messages        text NOT NULL,
    params          text NOT NULL,
    model           text NOT NULL,
    streaming_mode  text NOT NULL,
    metadata        text NOT NULL DEFAULT '{}',
    idempotency_key text,
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    error_code      text,
    error_message   text,
    last_sequence   integer NOT NULL DEFAULT 0,
    created_at      integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    enqueued_at     integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    started_at      integer,
    finished_at     integer,
    updated_at      integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    -- Per-job limit of one attempt (seconds); NULL means the worker's default.
    timeout_secs    integer,
    -- Set when an operator removed the failed job from the failed list (the row is kept).
    forgotten_at    integer,
    -- Tags chosen at submit: a JSON array of strings.
    tags            text NOT NULL DEFAULT '[]',
    batch_id        text REFERENCES batches (id),
    tenant          text NOT NULL DEFAULT 'default',
    -- `--prompt-storage none`: the trigger below empties `messages` once the job ended.
    discard_prompt  integer NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_unfinished ON jobs (status, updated_at) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_failed ON jobs (id DESC) WHERE status = 'failed' AND forgotten_at IS NULL;
CREATE INDEX jobs_batch ON jobs (batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_tenant_id ON jobs (tenant, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_recent_completed ON jobs (job_type, model, finished_at DESC)
    WHERE status = 'completed';

-- SQLite's triggers cannot assign NEW, so the conversation is emptied by a second UPDATE
-- right after the one that ended the job (in the same statement's transaction).
CREATE TRIGGER jobs_discard_prompt_on_update AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN NEW.discard_prompt AND NEW.status IN ('completed', 'failed', 'cancelled')
        AND NEW.messages <> '[]'
BEGIN
    UPDATE jobs SET messages = '[]' WHERE id = NEW.id;
END;

-- One result per finished job: content, usage and timings of the final attempt.
CREATE TABLE job_results (
    job_id                   text PRIMARY KEY NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    content                  text NOT NULL,
    reasoning_content        text NOT NULL DEFAULT '',
    finish_reason            text NOT NULL DEFAULT '',
    model                    text NOT NULL,
    provider                 text NOT NULL,
    simulated                integer NOT NULL,
    input_tokens             integer NOT NULL,
    output_tokens            integer NOT NULL,
    total_tokens             integer NOT NULL,
    usage_estimated          integer NOT NULL,
    time_to_first_token_ms   integer,
    duration_ms              integer NOT NULL,
    output_tokens_per_second real NOT NULL,
    queue_wait_ms            integer NOT NULL,
    created_at               integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    cost_usd                 real,
    cached_input_tokens      integer,
    reasoning_tokens         integer,
    stream_chunks            integer NOT NULL DEFAULT 0,
    stream_bytes             integer NOT NULL DEFAULT 0,
    inter_token_p50_ms       real,
    inter_token_p95_ms       real,
    upstream_request_id      text,
    structured_output        text
);

-- Every failed attempt with its error, kept for operators and the failed result.
CREATE TABLE job_attempt_failures (
    job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    error_code text NOT NULL,
    message    text NOT NULL,
    retryable  integer NOT NULL,
    created_at integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    PRIMARY KEY (job_id, attempt)
);

-- Stage changes and milestones; `event` is an encoded llmjobs.v1.ProgressEvent.
CREATE TABLE job_progress_events (
    id      integer PRIMARY KEY AUTOINCREMENT,
    job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('stage_changed', 'milestone')),
    name    text NOT NULL,
    time    integer NOT NULL,
    event   blob NOT NULL
);
CREATE INDEX job_progress_events_job ON job_progress_events (job_id, id);

-- API keys `llmj_<prefix>_<secret>`: the prefix finds the row, the SHA-256 of the secret
-- (hex) proves the key. The secret itself is never stored.
CREATE TABLE api_keys (
    id                  text PRIMARY KEY NOT NULL,
    prefix              text NOT NULL UNIQUE,
    secret_sha256       text NOT NULL,
    tenant              text NOT NULL,
    role                text NOT NULL CHECK (role IN ('user', 'admin')),
    name                text NOT NULL DEFAULT '',
    requests_per_minute integer,
    max_concurrent_jobs integer,
    created_at          integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    revoked_at          integer
);

-- The append-only audit log (see migrations/postgres/…_security for the columns).
CREATE TABLE audit_events (
    id      integer PRIMARY KEY AUTOINCREMENT,
    time    integer NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS integer)),
    actor   text NOT NULL,
    tenant  text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    peer    text NOT NULL,
    outcome text NOT NULL,
    detail  text NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_tenant ON audit_events (tenant, id DESC);
CREATE INDEX audit_events_action ON audit_events (action, id DESC);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
