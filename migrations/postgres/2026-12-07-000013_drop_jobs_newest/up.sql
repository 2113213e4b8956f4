-- `jobs_newest` (id DESC) repeats the primary key's index: a B-tree is read in either
-- direction, so newest-first listings use `jobs_pkey` backwards. Every job's insert and each
-- of its status changes (never HOT updates: the status is in partial indexes' predicates)
-- paid for one more index entry (issue 14).
DROP INDEX IF EXISTS jobs_newest;
