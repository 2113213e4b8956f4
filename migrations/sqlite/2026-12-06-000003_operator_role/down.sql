-- Fails while operator keys exist: revoke and delete them first.
CREATE TABLE api_keys_old (
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
INSERT INTO api_keys_old (id, prefix, secret_sha256, tenant, role, name, requests_per_minute,
                          max_concurrent_jobs, created_at, revoked_at)
    SELECT id, prefix, secret_sha256, tenant, role, name, requests_per_minute,
           max_concurrent_jobs, created_at, revoked_at
    FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_old RENAME TO api_keys;
