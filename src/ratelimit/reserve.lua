-- Reserves room for new unfinished jobs of one key.
-- KEYS[1] zset of the key's job ids that may be unfinished (score = reservation time, ms)
-- ARGV[1] limit, ARGV[2] now (ms), ARGV[3..] the new job ids
-- Returns the number of ids held before (the reservation is made only when it fits).
local held = redis.call('ZCARD', KEYS[1])
local n = #ARGV - 2
if held + n > tonumber(ARGV[1]) then
  return -held - 1
end
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 7 * 86400 * 1000)
return held
