-- quota_fixed.lua: take n from a fixed-window counter, atomically.
--
-- KEYS[1]  counter <prefix>{quota:<key>}:<window start ms>
-- ARGV[1]  limit
-- ARGV[2]  n to take
-- ARGV[3]  when the window's counter may go (Unix ms, PEXPIREAT)
--
-- Returns {allowed (1/0), remaining after this call}. A denied call takes nothing.

local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if used + n > limit then
  return {0, math.max(limit - used, 0)}
end
used = redis.call('INCRBY', KEYS[1], n)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {1, limit - used}
