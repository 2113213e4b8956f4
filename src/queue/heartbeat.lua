-- Extends the leases the caller still owns; returns the ids whose lease it lost.
-- KEYS: 1 leases zset, 2 job->owner hash
-- ARGV: 1 new deadline (ms), then pairs of job id and owner token
local lost = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
