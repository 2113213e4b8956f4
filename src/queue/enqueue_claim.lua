-- Enqueues a job, or claims it at once for a free worker slot of the enqueuing process when
-- its queue is empty and not paused (nothing waits that should go first): then it gets a
-- lease and an owner as claim.lua would give it, and no worker is woken.
-- KEYS: 1 queue zset, 2 job->queue hash, 3 paused set, 4 leases zset, 5 job->owner hash,
--       6 job->deliveries hash
-- ARGV: 1 job id, 2 queue name, 3 score (enqueue time, ms), 4 wake channel,
--       5 lease deadline (ms), 6 owner token
-- Returns the job's deliveries when claimed, else 0.
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 0 then
  redis.call('ZADD', KEYS[4], tonumber(ARGV[5]), ARGV[1])
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
  return redis.call('HINCRBY', KEYS[6], ARGV[1], 1)
end
redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[3]), ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 0
