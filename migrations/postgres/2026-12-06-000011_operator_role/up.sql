-- Roles: `user` (its tenant's jobs), `admin` (its tenant's jobs, failed jobs and audit
-- events) and `operator` (every tenant and the queue-wide operations). Keys stored as `admin`
-- before this keep the name and lose the queue-wide powers (issue 15, item 6).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('user', 'admin', 'operator'));
