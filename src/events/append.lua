-- Appends events to a job's log, assigning the next sequences, and publishes each.
-- Refuses (returns 0, appending nothing) after the terminal event, and for a stale attempt;
-- otherwise returns the sequence of the last event appended.
-- KEYS: 1 events list, 2 state hash, 3 progress snapshot
-- ARGV: 1 fence ('' none | 'a<N>' attempt N must be current | 's<N>' attempt N starts, older
--       attempts are refused from now on), 2 '1' when the last event is terminal, 3 channel,
--       4 output tokens so far ('' to keep), 5 TTL after terminal (s), 6 TTL before (s),
--       7 encoded progress snapshot ('' to keep), 8 snapshot TTL after terminal (s),
--       9.. the encoded events, in order
local state = KEYS[2]
if redis.call('HEXISTS', state, 'done') == 1 then return 0 end
local fence = ARGV[1]
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
local base = tonumber(redis.call('HGET', state, 'base') or '0')
local n = 0
local first = 0
for i = 9, #ARGV do
  n = redis.call('RPUSH', KEYS[1], ARGV[i])
  if first == 0 then first = n end
  redis.call('PUBLISH', ARGV[3], (base + n) .. ':' .. ARGV[i])
end
local seq = base + n
if ARGV[4] ~= '' then redis.call('HSET', state, 'output_tokens', ARGV[4]) end
if ARGV[7] ~= '' then
  redis.call('SET', KEYS[3], ARGV[7], 'EX', tonumber(ARGV[6]))
end
if ARGV[2] == '1' then
  redis.call('HSET', state, 'done', seq)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
  redis.call('EXPIRE', state, tonumber(ARGV[5]))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
elseif first == 1 or string.sub(fence, 1, 1) == 's' then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  redis.call('EXPIRE', state, tonumber(ARGV[6]))
end
return seq
