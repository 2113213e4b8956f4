-- Atomically: promote due retries, reclaim expired leases, then claim the first job of the
-- first non-paused, non-empty queue in KEYS[6..] (the caller's order encodes priority and
-- balancing).
-- KEYS: 1 leases zset, 2 delayed zset, 3 job->queue hash, 4 job->owner hash,
--       5 job->deliveries hash, 6.. queue zsets
-- ARGV: 1 now (ms), 2 lease (ms), 3 owner token, 4 queue key prefix, 5 paused set key,
--       6.. queue names (same order as KEYS[6..])
-- Returns {job_id, queue, deliveries} or false.
local now = tonumber(ARGV[1])

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local q = redis.call('HGET', KEYS[3], id)
  if q then redis.call('ZADD', ARGV[4] .. q, 'NX', now, id) end
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[4], id)
  local q = redis.call('HGET', KEYS[3], id)
  -- A reclaimed job has waited already: it goes to the front of its queue (just before the
  -- oldest job there, or "now" when the queue is empty, so wait figures stay true).
  if q then
    local first = redis.call('ZRANGE', ARGV[4] .. q, 0, 0, 'WITHSCORES')
    local score = now
    if first[2] and tonumber(first[2]) <= now then score = tonumber(first[2]) - 1 end
    redis.call('ZADD', ARGV[4] .. q, 'NX', score, id)
  end
end

for i = 6, #KEYS do
  local name = ARGV[i]
  if redis.call('SISMEMBER', ARGV[5], name) == 0 then
    local popped = redis.call('ZPOPMIN', KEYS[i])
    if popped[1] then
      local id = popped[1]
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
      redis.call('HSET', KEYS[4], id, ARGV[3])
      local n = redis.call('HINCRBY', KEYS[5], id, 1)
      return {id, name, n}
    end
  end
end
return false
