-- Takes one request and some tokens from a model's upstream budget, both or neither.
-- Two sliding windows (previous window weighted by its overlap with the last window length).
-- KEYS[1], KEYS[2] requests: previous and current window; KEYS[3], KEYS[4] tokens: same
-- ARGV[1] ms elapsed in the current window, ARGV[2] window length (ms)
-- ARGV[3] request limit (0: none), ARGV[4] token limit (0: none), ARGV[5] tokens to take
-- Returns {taken (1/0), requests prev, requests cur, tokens prev, tokens cur}
local window = tonumber(ARGV[2])
local weight = (window - tonumber(ARGV[1])) / window
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local rp, rc, tp, tc = count(KEYS[1]), count(KEYS[2]), count(KEYS[3]), count(KEYS[4])
local rl, tl, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fits_r = rl == 0 or rp * weight + rc + 1 <= rl
local fits_t = tl == 0 or tp * weight + tc + tokens <= tl
if not (fits_r and fits_t) then
  return {0, rp, rc, tp, tc}
end
rc = redis.call('INCRBY', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], window * 2)
tc = redis.call('INCRBY', KEYS[4], tokens)
redis.call('PEXPIRE', KEYS[4], window * 2)
return {1, rp, rc, tp, tc}
