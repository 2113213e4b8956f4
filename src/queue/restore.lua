-- Gives back to a live worker the claims Redis lost (a restart without persistence, FLUSHALL)
-- while their attempts went on: each job the queue does not know at all (no owner, in no
-- queue) is claimed again by the caller's owner token, with a new lease. A job the queue
-- knows again (the reconciler re-enqueued it, another worker claimed it) is left alone.
-- KEYS: 1 leases zset, 2 job->owner hash, 3 job->queue hash, 4 job->deliveries hash
-- ARGV: 1 lease deadline (ms), then triples of job id, owner token, queue name
-- Returns the ids restored.
local restored = {}
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], id) == 0 and redis.call('HEXISTS', KEYS[3], id) == 0 then
    redis.call('HSET', KEYS[3], id, ARGV[i + 2])
    redis.call('HSET', KEYS[2], id, ARGV[i + 1])
    redis.call('HSETNX', KEYS[4], id, 1)
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), id)
    table.insert(restored, id)
  end
end
return restored
