DROP TABLE audit_events;
DROP TABLE api_keys;
DROP TABLE job_progress_events;
DROP TABLE job_attempt_failures;
DROP TABLE job_results;
DROP TABLE jobs;
DROP TABLE batches;
