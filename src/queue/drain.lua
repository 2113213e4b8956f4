-- Takes every pending job out of one queue (purge); delayed and claimed jobs stay.
-- KEYS: 1 queue zset, 2 job->queue hash, 3 job->deliveries hash
-- Returns the ids removed.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return ids
