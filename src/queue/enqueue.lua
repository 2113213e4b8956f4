-- Enqueues a job (idempotent) and wakes idle workers.
-- KEYS: 1 queue zset, 2 job->queue hash
-- ARGV: 1 job id, 2 queue name, 3 score (enqueue time, ms), 4 wake channel
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local added = redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[3]), ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return added
