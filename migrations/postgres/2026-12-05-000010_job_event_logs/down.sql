DROP TABLE job_event_logs;
