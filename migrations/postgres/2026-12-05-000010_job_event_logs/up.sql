-- A finished job's whole event log (issue #20): Redis keeps it only a short window after the
-- end, so replays of older jobs read it from here. Written with the job's result, in the same
-- transaction as the update that ends the job (or, on rare paths, right after the terminal
-- event), and deleted with its job by cleanup. No foreign key, as for progress history: it
-- would cost a row-locking lookup of the job per row for nothing the writer does not ensure.
-- `events` is the compact form of `src/events/archive.rs` (format byte, LZ4 block of
-- length-delimited events); event i (0-based) has sequence first_sequence + i.
CREATE TABLE job_event_logs (
    job_id         uuid PRIMARY KEY,
    first_sequence bigint NOT NULL,
    event_count    bigint NOT NULL,
    events         bytea NOT NULL
);
-- Already compressed: no second try by TOAST.
ALTER TABLE job_event_logs ALTER COLUMN events SET STORAGE EXTERNAL;
