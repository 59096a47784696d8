-- quota_sliding.lua: take n from a sliding window: at most `limit` takes in
-- any interval of `period`, by Redis's clock.
--
-- KEYS[1]  log <prefix>{quota:<key>}:sliding   zset: take id -> Redis time (ms)
-- ARGV[1]  limit
-- ARGV[2]  n to take
-- ARGV[3]  period in milliseconds
-- ARGV[4]  random id of this call (members must be unique)
--
-- Returns {allowed (1/0), remaining, ms until the oldest take leaves the window}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local used = redis.call('ZCARD', KEYS[1])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
if used + n > limit then
  local reset = oldest and (tonumber(oldest) + period - now) or 0
  return {0, math.max(limit - used, 0), reset}
end
for i = 1, n do
  redis.call('ZADD', KEYS[1], now, t[1] .. t[2] .. '-' .. i .. '-' .. ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], period)
local reset = (oldest and tonumber(oldest) or now) + period - now
return {1, limit - used - n, reset}
