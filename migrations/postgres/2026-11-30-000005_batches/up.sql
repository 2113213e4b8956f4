-- Batches: jobs submitted together. A batch's counts, tokens and cost are computed from its
-- jobs when read, so they cannot drift from them; the row keeps what the client gave.
CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    display_name    text NOT NULL DEFAULT '',
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- A repeat of SubmitBatch with this key within 24 h returns this batch.
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX batches_idempotency_key ON batches (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The batch a job belongs to (NULL for jobs submitted alone). Cleanup deletes a batch's jobs
-- only once all of them ended, then the empty batch.
ALTER TABLE jobs ADD COLUMN batch_id uuid REFERENCES batches (id);
CREATE INDEX jobs_batch ON jobs (batch_id, id) WHERE batch_id IS NOT NULL;
