-- Sliding-window request counter (two fixed windows, the previous one weighted by how much of
-- it still overlaps the last minute).
-- KEYS[1] previous window's counter, KEYS[2] current window's counter
-- ARGV[1] limit, ARGV[2] ms elapsed in the current window, ARGV[3] window length (ms),
-- ARGV[4] amount to take
-- Returns {taken (1/0), previous count, current count}
local prev = tonumber(redis.call('GET', KEYS[1]) or '0')
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local weight = (window - tonumber(ARGV[2])) / window
if prev * weight + cur + amount > limit then
  return {0, prev, cur}
end
cur = redis.call('INCRBY', KEYS[2], amount)
redis.call('PEXPIRE', KEYS[2], window * 2)
return {1, prev, cur}
