-- Counts per queue: pending, oldest pending score, delayed, running, paused.
-- KEYS: 1 leases zset, 2 delayed zset, 3 job->queue hash, 4 paused set, 5.. queue zsets
-- ARGV: 1.. queue names (same order as KEYS[5..])
-- Returns one {pending, oldest score or -1, delayed, running, paused 0/1} per queue.
local index = {}
local out = {}
for i = 5, #KEYS do
  local name = ARGV[i - 4]
  index[name] = i - 4
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  out[i - 4] = {
    redis.call('ZCARD', KEYS[i]),
    oldest[2] and tonumber(oldest[2]) or -1,
    0,
    0,
    redis.call('SISMEMBER', KEYS[4], name),
  }
end
local function tally(zset, slot)
  for _, id in ipairs(redis.call('ZRANGE', zset, 0, -1)) do
    local q = redis.call('HGET', KEYS[3], id)
    local n = q and index[q]
    if n then out[n][slot] = out[n][slot] + 1 end
  end
end
tally(KEYS[2], 3)
tally(KEYS[1], 4)
return out
