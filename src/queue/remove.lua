-- Takes a job out of its queue or the delayed set (cancel of a job that is not running).
-- KEYS: 1 job->queue hash, 2 delayed zset, 3 leases zset, 4 job->deliveries hash
-- ARGV: 1 job id, 2 queue key prefix
-- Returns 'removed', 'leased' (a worker holds it) or 'absent'.
local q = redis.call('HGET', KEYS[1], ARGV[1])
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 'leased' end
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
if q then removed = removed + redis.call('ZREM', ARGV[2] .. q, ARGV[1]) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if removed > 0 then return 'removed' end
return 'absent'
