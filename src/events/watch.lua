-- Marks a job's log as watched until ARGV[1] (ms since the epoch): appends publish their
-- events only while a mark is current (see append.lua), so a job nobody follows costs no
-- PUBLISH. A finished job's log takes no more appends: it is left alone, so that watchers
-- do not keep its keys past their short expiry. A state hash holding only the mark (the job
-- has not started, or its keys have expired with its end) lives ARGV[2] seconds from each
-- renewal; a started job's hash keeps its own TTL.
-- KEYS: 1 state hash
-- ARGV: 1 watched until (ms), 2 TTL of a hash holding only the mark (s)
local st = redis.call('HMGET', KEYS[1], 'done', 'attempt', 'base')
if st[1] then return 1 end
redis.call('HSET', KEYS[1], 'w', ARGV[1])
if not st[2] and not st[3] then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
