-- quota_fixed.lua: take n from a fixed-window counter, atomically and at
-- most once per request id.
--
-- KEYS[1]  counter  <prefix>{quota:<key>}:<scope>:<window>       string: the count taken
-- KEYS[2]  request  <prefix>{quota:<key>}:<scope>:req:<request id>
--          (scope = the period, and the zone for zoned windows)
-- ARGV[1]  limit (1 .. 2^53 - 1)
-- ARGV[2]  n to take (0 .. limit; 0 only reads)
-- ARGV[3]  start, ARGV[4] end of the window's current span of real time (Unix ms)
-- ARGV[5]  when the counter may go (Unix ms, PEXPIREAT)
-- ARGV[6]  how long the request id is remembered (ms)
--
-- Returns {1, remaining} taken (or read), {0, remaining} denied (nothing
-- taken), {2, remaining} this request id was counted already (nothing more
-- taken), {-1, Redis time in ms} the window does not contain Redis's time:
-- the caller computes it again from that time.
--
-- Every number stays below 2^53, where Lua's doubles are exact: n is
-- compared with limit - used, never added to used.

local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local left = math.max(limit - used, 0)
if n > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  return {2, left}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(ARGV[3]) or now >= tonumber(ARGV[4]) then
  return {-1, now}
end
if n == 0 then
  return {1, left}
end
if n > limit - used then
  return {0, left}
end
used = redis.call('INCRBY', KEYS[1], n)
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[6])
return {1, limit - used}
