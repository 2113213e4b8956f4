-- Security: tenants on jobs and batches, API keys (hashed) and the append-only audit log.

-- Every job and batch belongs to the tenant of the key that submitted it. Rows from before
-- this migration (and rows written with authentication off) belong to `default`.
ALTER TABLE jobs ADD COLUMN tenant text NOT NULL DEFAULT 'default';
CREATE INDEX jobs_tenant_id ON jobs (tenant, id DESC);
ALTER TABLE batches ADD COLUMN tenant text NOT NULL DEFAULT 'default';

-- Idempotency keys are per tenant: a key reused by another tenant must not return (and so
-- reveal) that tenant's job or batch.
DROP INDEX jobs_idempotency_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX batches_idempotency_key;
CREATE UNIQUE INDEX batches_idempotency_key ON batches (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- API keys `llmj_<prefix>_<secret>`: the prefix (not secret) finds the row, the SHA-256 of
-- the secret (hex) proves the key. The secret itself is never stored.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    prefix text NOT NULL UNIQUE,
    secret_sha256 text NOT NULL,
    tenant text NOT NULL,
    role text NOT NULL CHECK (role IN ('user', 'admin')),
    name text NOT NULL DEFAULT '',
    -- Per-key overrides of the server's client rate limits (NULL: the server default).
    requests_per_minute integer,
    max_concurrent_jobs integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Who did what to what, when, from where, with which outcome. Append-only: a trigger refuses
-- UPDATE and DELETE.
CREATE TABLE audit_events (
    id bigserial PRIMARY KEY,
    time timestamptz NOT NULL DEFAULT now(),
    -- Key prefix of the caller; `anonymous` without a valid key, `local` for the CLI on the
    -- database, `auth-off` when authentication is switched off.
    actor text NOT NULL,
    tenant text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    peer text NOT NULL,
    -- `ok`, `denied` or `error`.
    outcome text NOT NULL,
    detail text NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_tenant ON audit_events (tenant, id DESC);
CREATE INDEX audit_events_action ON audit_events (action, id DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
