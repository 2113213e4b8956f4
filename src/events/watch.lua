-- Marks a job's log as watched until ARGV[1] (ms since the epoch): appends publish their
-- events only while a mark is current (see append.lua), so a job nobody follows costs no
-- PUBLISH. A state hash created here (the job has not started yet) gets the unfinished TTL.
-- KEYS: 1 state hash
-- ARGV: 1 watched until (ms), 2 TTL of a new state hash (s)
redis.call('HSET', KEYS[1], 'w', ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
