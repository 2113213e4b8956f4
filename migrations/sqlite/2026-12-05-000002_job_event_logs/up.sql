-- A finished job's whole event log (see the Postgres migration of the same name).
CREATE TABLE job_event_logs (
    job_id         text PRIMARY KEY NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    first_sequence integer NOT NULL,
    event_count    integer NOT NULL,
    events         blob NOT NULL
);
