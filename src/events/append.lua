-- Appends events to a job's log, assigning the next sequences, and publishes them all in one
-- message while someone watches the job (a current watch mark, see watch.lua: a job nobody
-- follows costs no PUBLISH; a watcher reads what came before its mark from the list).
-- Refuses (appending nothing) after the terminal event, and for a stale attempt.
-- A terminal append starts the short expiry of every key of the job (the store keeps its log
-- from then on).
-- KEYS: 1 events list, 2 state hash, 3 progress snapshot, 4 cancel flag
-- ARGV: 1 fence ('' none | 'a<N>' attempt N must be current | 'a<N>@<H>' attempt N must be
--       current and the log's last sequence H: when it is H + the number of events instead,
--       an earlier try of this very append (whose answer was lost) put them in, and the answer
--       is that sequence with nothing appended; any other sequence refuses | 's<N>' attempt N
--       starts, older attempts are refused from now on), 2 '1' when the last event is terminal, 3 channel,
--       4 cancel flag: '0' not read, '1' read, '2' read and, when it is not set, claim the
--       job's end for the fencing attempt ('a<N>' fence; the state's 'sealed' field: from then
--       on cancel.lua answers 'ending'; claiming again under the same attempt keeps the
--       claim), 5 TTL after terminal (s), 6 TTL before (s),
--       7 encoded progress snapshot ('' to keep), 8 snapshot TTL after terminal (s),
--       9 now (ms since the epoch, to compare with the watch mark),
--       10 log wanted ('' no | '-' yes | '<N>' unless the last sequence appended is N),
--       11 watch mark to set ('' none | watched until, ms since the epoch: the job's submitter
--       follows it from its opening append, see watch.lua), 12 TTL of a state hash holding
--       only that mark (s),
--       13.. the encoded events, in order (at least one)
-- Returns {sequence of the last event appended, or 0 when refused; 1 when the cancel flag is
-- set (read only when asked; 0 for an attempt that holds the claim on the end), else 0;
-- 1 when the end was claimed by this append, else 0; 1 when someone watches the job (a current mark), else 0;
-- the log's base; items; 1 when refused because the fence names an attempt ('a') and the state
-- holds none (the keys were lost with Redis, or no attempt started), else 0}: items are, for an accepted start ('s' fence), the entries before
-- this append; when the log is wanted and the append was accepted or refused for a log that
-- has its terminal event, the whole list; else none. Item i has sequence base + i (1-based).
-- The message on the channel is '<sequence of the first event>/<number of events>:' followed
-- by each event in protobuf's length-delimited form (its length as a varint, then its bytes).
local FIRST_EVENT = 13
-- Arguments per RPUSH: Lua's unpack fails beyond about 8,000 values.
local PUSH_CHUNK = 1000

local state = KEYS[2]
local st = redis.call('HMGET', state, 'done', 'attempt', 'base', 'w', 'sealed')
local fence = ARGV[1]
local kind = string.sub(fence, 1, 1)
local attempt, head = string.match(string.sub(fence, 2), '^(%d*)@?(%d*)$')
local seal = ARGV[4] == '2' and kind == 'a'
local cancel = 0
if ARGV[4] ~= '0' and redis.call('EXISTS', KEYS[4]) == 1 then cancel = 1 end
-- An attempt that claimed the end keeps it: a cancel after the claim does not undo it.
if seal and st[5] == attempt then cancel = 0 end
-- An unreadable mark counts as current: publishing too much only costs.
local watched = 0
if st[4] and (tonumber(st[4]) or math.huge) >= tonumber(ARGV[9]) then watched = 1 end
-- A log restarted after a Redis loss continues above `base` (see restart.lua).
local base = tonumber(st[3] or '0')
local wanted = ARGV[10]
if st[1] then
  if wanted ~= '' then return {0, cancel, 0, watched, base, redis.call('LRANGE', KEYS[1], 0, -1), 0} end
  return {0, cancel, 0, watched, base, {}, 0}
end
if fence ~= '' then
  local n = tonumber(attempt)
  local current = tonumber(st[2] or '0')
  if kind == 's' then
    if n < current then return {0, cancel, 0, watched, base, {}, 0} end
  elseif n ~= current then
    local lost = 0
    if not st[2] then lost = 1 end
    return {0, cancel, 0, watched, base, {}, lost}
  end
end
local sealed = 0
if seal and cancel == 0 then sealed = 1 end
-- As watch.lua, in the same step: the job is watched from this append on.
if ARGV[11] ~= '' then
  redis.call('HSET', state, 'w', ARGV[11])
  if not st[2] and not st[3] then redis.call('EXPIRE', state, tonumber(ARGV[12])) end
  watched = 1
end

local items = {}
if kind == 's' then items = redis.call('LRANGE', KEYS[1], 0, -1) end
local last = #ARGV
local len = 0
for i = FIRST_EVENT, last, PUSH_CHUNK do
  len = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + PUSH_CHUNK - 1, last)))
end
-- 'a<N>@<H>': checked after the push, whose answer is the new length (no extra command in
-- the usual case); a push at the wrong place is taken back at once.
if head ~= nil and head ~= '' then
  local count = last - FIRST_EVENT + 1
  local before = base + len - count
  if before ~= tonumber(head) then
    if len == count then
      redis.call('DEL', KEYS[1])
    else
      redis.call('LTRIM', KEYS[1], 0, len - count - 1)
    end
    if before == tonumber(head) + count then
      local claimed = 0
      if seal and st[5] == attempt then claimed = 1 end
      return {before, cancel, claimed, watched, base, {}, 0}
    end
    return {0, cancel, 0, watched, base, {}, 0}
  end
end
local first = len - (last - FIRST_EVENT)
local seq = base + len

if watched == 1 then
  local parts = {(base + first) .. '/' .. (last - FIRST_EVENT + 1) .. ':'}
  for i = FIRST_EVENT, last do
    local size = #ARGV[i]
    if size < 128 then
      parts[#parts + 1] = string.char(size)
    else
      local varint = {}
      while size >= 128 do
        varint[#varint + 1] = string.char(size % 128 + 128)
        size = math.floor(size / 128)
      end
      varint[#varint + 1] = string.char(size)
      parts[#parts + 1] = table.concat(varint)
    end
    parts[#parts + 1] = ARGV[i]
  end
  redis.call('PUBLISH', ARGV[3], table.concat(parts))
end

local terminal = ARGV[2] == '1'
local fields = {}
if kind == 's' then
  fields[#fields + 1] = 'attempt'
  fields[#fields + 1] = attempt
end
if terminal then
  fields[#fields + 1] = 'done'
  fields[#fields + 1] = seq
end
if sealed == 1 then
  fields[#fields + 1] = 'sealed'
  fields[#fields + 1] = attempt
end
if #fields > 0 then redis.call('HSET', state, unpack(fields)) end

if ARGV[7] ~= '' then
  local ttl = ARGV[6]
  if terminal then ttl = ARGV[8] end
  redis.call('SET', KEYS[3], ARGV[7], 'EX', tonumber(ttl))
elseif terminal then
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
end
if terminal then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
  redis.call('EXPIRE', state, tonumber(ARGV[5]))
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]))
  if wanted ~= '' then
    items = {}
    if tonumber(wanted) ~= seq then items = redis.call('LRANGE', KEYS[1], 0, -1) end
  end
else
  if first == 1 or kind == 's' then
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  end
  -- Only a start writes the state hash before the end (restart.lua sets its own TTL).
  if kind == 's' then redis.call('EXPIRE', state, tonumber(ARGV[6])) end
end
return {seq, cancel, sealed, watched, base, items, 0}
