-- Starts a new log for a job: sequences continue above ARGV[1], and attempts before ARGV[2]
-- are refused. Without ARGV[4] = '1' (replace) it is a no-op when a log or an attempt's
-- state exists (the reconciler after a Redis loss); with it, the old log is dropped (an
-- operator's retry of a failed job, whose old log ends with its terminal event), and so is a
-- cancel flag left from the old run (one that came after its end was claimed). A watch
-- mark (watch.lua) alone is not a log, and it is kept.
-- KEYS: 1 events list, 2 state hash, 3 cancel flag
-- ARGV: 1 base sequence, 2 next attempt, 3 TTL (s), 4 replace ('1' or '0')
-- Returns 1 when a new log was started.
local st = redis.call('HMGET', KEYS[2], 'w', 'attempt', 'base', 'done')
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
elseif redis.call('EXISTS', KEYS[1]) == 1 or st[2] or st[3] or st[4] then
  return 0
end
if st[1] then redis.call('HSET', KEYS[2], 'w', st[1]) end
redis.call('HSET', KEYS[2], 'base', ARGV[1], 'attempt', ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
