DROP TABLE job_attempt_failures;
DROP TABLE job_results;
DROP TABLE jobs;
