-- Asks for a job to be cancelled, in one step with the appends (append.lua): unless the log
-- has its terminal event, sets the cancel flag and tells the workers. A cancel that comes
-- here before an attempt claims the job's end (append.lua's '2') wins: that claim reads the
-- flag and is refused; one that comes after is answered 'ending'.
-- KEYS: 1 events list, 2 state hash, 3 cancel flag
-- ARGV: 1 reason, 2 flag TTL (s), 3 workers' cancel channel, 4 job id
-- Returns {'ended', terminal sequence, terminal event (the log's last entry, '' when the
-- list is gone)} and sets nothing; else {'ending'} when the current attempt claimed the end,
-- or {'flagged'}.
local st = redis.call('HMGET', KEYS[2], 'done', 'attempt', 'sealed')
if st[1] then
  return {'ended', st[1], redis.call('LINDEX', KEYS[1], -1) or ''}
end
redis.call('SET', KEYS[3], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], ARGV[4])
if st[3] and st[3] == st[2] then return {'ending'} end
return {'flagged'}
