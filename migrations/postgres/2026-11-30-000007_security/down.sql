DROP TRIGGER audit_events_append_only ON audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE audit_events;
DROP TABLE api_keys;
DROP INDEX batches_idempotency_key;
CREATE UNIQUE INDEX batches_idempotency_key ON batches (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX jobs_idempotency_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE batches DROP COLUMN tenant;
DROP INDEX jobs_tenant_id;
ALTER TABLE jobs DROP COLUMN tenant;
