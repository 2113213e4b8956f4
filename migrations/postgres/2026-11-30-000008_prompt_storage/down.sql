DROP TRIGGER jobs_discard_prompt ON jobs;
DROP FUNCTION jobs_discard_prompt();
ALTER TABLE jobs DROP COLUMN discard_prompt;
