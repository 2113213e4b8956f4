ALTER TABLE jobs DROP COLUMN timeout_secs;
