-- Starts a new log for a job whose log was lost (Redis restarted or flushed): sequences continue
-- above ARGV[1], and attempts before ARGV[2] are refused. No-op when a log or state exists.
-- KEYS: 1 events list, 2 state hash
-- ARGV: 1 base sequence, 2 next attempt, 3 TTL (s)
-- Returns 1 when a new log was started.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'base', ARGV[1], 'attempt', ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
