-- Atomically: end the caller's finished claims (as settle.lua does, for every one at once),
-- promote due retries and reclaim expired leases (when ARGV[7] is '1': callers sweep only
-- every so often, not on every claim), then claim up to ARGV[6] jobs from the non-paused
-- queues in KEYS[6..], in that order (the caller's order encodes priority and balancing): a
-- queue is emptied before the next is tried. Every job of one call gets the same owner token
-- (the lease fences each job separately).
-- KEYS: 1 leases zset, 2 delayed zset, 3 job->queue hash, 4 job->owner hash,
--       5 job->deliveries hash, 6.. queue zsets
-- ARGV: 1 now (ms), 2 lease (ms), 3 owner token, 4 queue key prefix, 5 paused set key,
--       6 most jobs to claim, 7 '1' to sweep, 8.. queue names (same order as KEYS[6..]),
--       then triples of a finished claim: job id, its owner token, retry-at (ms) or ''
-- Returns {job_id, queue, deliveries, job_id, queue, deliveries, ...} (empty when none).
local now = tonumber(ARGV[1])
local NAMES = 8

-- Finished claims first, so that a sweep cannot take one of them for an expired lease.
local ENDED = NAMES + #KEYS - 5
if ENDED <= #ARGV then
  local ids = {}
  for i = ENDED, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
  local owners = redis.call('HMGET', KEYS[4], unpack(ids))
  local ours, done, retry = {}, {}, {}
  for j, id in ipairs(ids) do
    local i = ENDED + (j - 1) * 3
    if owners[j] == ARGV[i + 1] then
      ours[#ours + 1] = id
      if ARGV[i + 2] == '' then
        done[#done + 1] = id
      else
        retry[#retry + 1] = tonumber(ARGV[i + 2])
        retry[#retry + 1] = id
      end
    end
  end
  if #ours > 0 then
    redis.call('ZREM', KEYS[1], unpack(ours))
    redis.call('HDEL', KEYS[4], unpack(ours))
  end
  if #done > 0 then
    redis.call('HDEL', KEYS[5], unpack(done))
    redis.call('HDEL', KEYS[3], unpack(done))
  end
  if #retry > 0 then redis.call('ZADD', KEYS[2], unpack(retry)) end
end

if ARGV[7] == '1' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[2], id)
    local q = redis.call('HGET', KEYS[3], id)
    if q then redis.call('ZADD', ARGV[4] .. q, 'NX', now, id) end
  end

  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[4], id)
    local q = redis.call('HGET', KEYS[3], id)
    -- A reclaimed job has waited already: it goes to the front of its queue (just before the
    -- oldest job there, or "now" when the queue is empty, so wait figures stay true).
    if q then
      local first = redis.call('ZRANGE', ARGV[4] .. q, 0, 0, 'WITHSCORES')
      local score = now
      if first[2] and tonumber(first[2]) <= now then score = tonumber(first[2]) - 1 end
      redis.call('ZADD', ARGV[4] .. q, 'NX', score, id)
    end
  end
end

local paused = {}
for _, name in ipairs(redis.call('SMEMBERS', ARGV[5])) do paused[name] = true end

local want = tonumber(ARGV[6])
local deadline = now + tonumber(ARGV[2])
local out = {}
local leases = {}
local owners = {}
local function take(id, name)
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id
  owners[#owners + 1] = id
  owners[#owners + 1] = ARGV[3]
  out[#out + 1] = id
  out[#out + 1] = name
  out[#out + 1] = redis.call('HINCRBY', KEYS[5], id, 1)
  want = want - 1
end

local keys = {}
local names = {}
for i = 6, #KEYS do
  local name = ARGV[i - 6 + NAMES]
  if not paused[name] then
    keys[#keys + 1] = KEYS[i]
    names[KEYS[i]] = name
  end
end
-- ZMPOP (Redis 7) pops from the first non-empty queue in one command; before Redis 7, one
-- ZPOPMIN per queue.
local zmpop = true
while want > 0 and #keys > 0 do
  local args = {'ZMPOP', #keys}
  for _, key in ipairs(keys) do args[#args + 1] = key end
  args[#args + 1] = 'MIN'
  args[#args + 1] = 'COUNT'
  args[#args + 1] = want
  local r = redis.pcall(unpack(args))
  if type(r) == 'table' and r.err then
    zmpop = false
    break
  end
  if not r then break end
  for _, pair in ipairs(r[2]) do take(pair[1], names[r[1]]) end
end
if not zmpop then
  for _, key in ipairs(keys) do
    if want <= 0 then break end
    local popped = redis.call('ZPOPMIN', key, want)
    for j = 1, #popped, 2 do take(popped[j], names[key]) end
  end
end
if #leases > 0 then
  redis.call('ZADD', KEYS[1], unpack(leases))
  redis.call('HSET', KEYS[4], unpack(owners))
end
return out
