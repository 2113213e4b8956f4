-- Appends one event to a job's log, assigning the next sequence, and publishes it.
-- Refuses (returns 0) after the terminal event, and for a stale attempt.
-- KEYS: 1 events list, 2 state hash, 3 progress snapshot
-- ARGV: 1 encoded event, 2 fence ('' none | 'a<N>' attempt N must be current | 's<N>' attempt N
--       starts, older attempts are refused from now on), 3 '1' when terminal, 4 channel,
--       5 output tokens so far ('' to keep), 6 TTL after terminal (s), 7 TTL before (s),
--       8 encoded progress snapshot ('' to keep), 9 snapshot TTL after terminal (s)
local state = KEYS[2]
if redis.call('HEXISTS', state, 'done') == 1 then return 0 end
local fence = ARGV[2]
if fence ~= '' then
  local n = tonumber(string.sub(fence, 2))
  local current = tonumber(redis.call('HGET', state, 'attempt') or '0')
  if string.sub(fence, 1, 1) == 's' then
    if n < current then return 0 end
    redis.call('HSET', state, 'attempt', n, 'output_tokens', 0)
  elseif n ~= current then
    return 0
  end
end
-- A log restarted after a Redis loss continues above `base` (see restart.lua).
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local seq = tonumber(redis.call('HGET', state, 'base') or '0') + n
if ARGV[5] ~= '' then redis.call('HSET', state, 'output_tokens', ARGV[5]) end
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[3], ARGV[8], 'EX', tonumber(ARGV[7]))
end
if ARGV[3] == '1' then
  redis.call('HSET', state, 'done', seq)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  redis.call('EXPIRE', state, tonumber(ARGV[6]))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[9]))
elseif n == 1 or string.sub(fence, 1, 1) == 's' then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  redis.call('EXPIRE', state, tonumber(ARGV[7]))
end
redis.call('PUBLISH', ARGV[4], seq .. ':' .. ARGV[1])
return seq
