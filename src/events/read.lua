-- Reads a job's log after a sequence.
-- KEYS: 1 events list, 2 state hash
-- ARGV: 1 after (sequence), 2 most items to return (0: all)
-- Returns false when there is no log, else {base, terminal sequence or '', first index, items}:
-- item i has sequence base + first index + i (1-based i).
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local base = tonumber(redis.call('HGET', KEYS[2], 'base') or '0')
local done = redis.call('HGET', KEYS[2], 'done') or ''
local first = tonumber(ARGV[1]) - base
if first < 0 then first = 0 end
local count = tonumber(ARGV[2] or '0')
local last = -1
if count > 0 then last = first + count - 1 end
return {base, done, first, redis.call('LRANGE', KEYS[1], first, last)}
