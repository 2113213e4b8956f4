-- Ends a claim if the caller still owns it: either finished (ARGV[3] == '') or back to the
-- delayed set until ARGV[3] (ms) for a retry.
-- KEYS: 1 leases zset, 2 job->owner hash, 3 job->deliveries hash, 4 job->queue hash,
--       5 delayed zset
-- ARGV: 1 job id, 2 owner token, 3 retry-at (ms) or ''
-- Returns 1 when settled, 0 when the claim was no longer ours.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
else
  redis.call('ZADD', KEYS[5], tonumber(ARGV[3]), ARGV[1])
end
return 1
