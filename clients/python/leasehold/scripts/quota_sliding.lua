-- quota_sliding.lua: take n from a sliding window (at most `limit` in any
-- interval of `period`, by Redis's clock), atomically and at most once per
-- request id, in O(log N) whatever n is.
--
-- KEYS[1]  log      <prefix>{quota:<key>}:sliding:<period>ms
--          zset: "<cum>:<n>:<request id>" -> Redis time of the take (ms)
-- KEYS[2]  request  <prefix>{quota:<key>}:sliding:<period>ms:req:<request id>
-- ARGV[1]  limit (1 .. 2^53 - 1)
-- ARGV[2]  n to take (0 .. limit; 0 only reads)
-- ARGV[3]  period (ms)
-- ARGV[4]  request id
-- ARGV[5]  how long the request id is remembered (ms)
--
-- Returns {1 taken (or read) | 0 denied | 2 counted already, remaining,
-- ms until the oldest live take leaves the window}.
--
-- Each take is ONE entry carrying its weight n and `cum`, the running total
-- of all weights up to and including it (modulo 2^53, so that it stays exact
-- in Lua's doubles; the count in a window is below 2^53, so the modular
-- difference is the true one). The count in the window is the newest
-- entry's cum minus the cum before the oldest live entry: two O(log N)
-- lookups. Scores are unique and grow with each take (a 1/1024 ms step
-- within one millisecond), so rank order is the order of the takes.

local M = 9007199254740992 -- 2^53
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cutoff = now - period

local function parse(member)
  local c, w = string.match(member, '^(%d+):(%d+):')
  return tonumber(c) or 0, tonumber(w) or 0
end
local function sub(a, b)
  local d = a - b
  if d < 0 then d = d + M end
  return d
end

local total, last_score, oldest, used = 0, nil, nil, 0
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[1] then
  total = parse(newest[1])
  last_score = tonumber(newest[2])
end
local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.17g', cutoff), '+inf',
  'WITHSCORES', 'LIMIT', 0, 1)
if first[1] then
  local c, w = parse(first[1])
  used = sub(total, sub(c, w))
  oldest = tonumber(first[2])
end
local left = math.max(limit - used, 0)
local reset = 0
if oldest then reset = math.max(math.ceil(oldest + period - now), 0) end

if n > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  return {2, left, reset}
end
if n == 0 then
  return {1, left, reset}
end
if n > limit - used then
  return {0, left, reset}
end
-- Drop at most 64 expired entries per take: each take adds one, so the log
-- stays bounded, and no single call pays for a long backlog.
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', cutoff),
  'LIMIT', 0, 64)
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
end
local cum
if total >= M - n then cum = total - (M - n) else cum = total + n end
local score = now
if last_score and score <= last_score then score = last_score + 1 / 1024 end
redis.call('ZADD', KEYS[1], string.format('%.17g', score),
  string.format('%.0f:%.0f:%s', cum, n, ARGV[4]))
redis.call('PEXPIRE', KEYS[1], period + 1000)
redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
if not oldest then reset = period end
return {1, limit - used - n, reset}
