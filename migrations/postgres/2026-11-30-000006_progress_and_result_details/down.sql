DROP INDEX IF EXISTS jobs_recent_completed;
ALTER TABLE job_results
    DROP COLUMN cached_input_tokens,
    DROP COLUMN reasoning_tokens,
    DROP COLUMN stream_chunks,
    DROP COLUMN stream_bytes,
    DROP COLUMN inter_token_p50_ms,
    DROP COLUMN inter_token_p95_ms,
    DROP COLUMN upstream_request_id,
    DROP COLUMN structured_output;
DROP TABLE job_progress_events;
