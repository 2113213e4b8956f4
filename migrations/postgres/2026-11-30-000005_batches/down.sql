ALTER TABLE jobs DROP COLUMN batch_id;
DROP TABLE batches;
