-- Extends the leases the caller still owns; reports the others, in two kinds.
-- KEYS: 1 leases zset, 2 job->owner hash, 3 job->queue hash
-- ARGV: 1 new deadline (ms), then pairs of job id and owner token
-- Returns {lost, vanished}: lost = ids another owner holds, or that the queue took back
-- (an expired lease put the job back in its queue, a retry waits in the delayed set);
-- vanished = ids the queue no longer knows at all (no owner, no queue: settled for good, or
-- lost with Redis's data), which the caller may restore with restore.lua.
local lost, vanished = {}, {}
for i = 2, #ARGV, 2 do
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if owner == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[i])
  elseif not owner and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
    table.insert(vanished, ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return {lost, vanished}
