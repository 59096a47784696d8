-- cache_get.lua: read a cached value, how long it stays valid, and whether
-- a recent refresh failed.
--
-- KEYS[1]  value hash      <prefix>{cache#<name>}:value    fields value, life (ms); TTL = what is left
-- KEYS[2]  failure marker  <prefix>{cache#<name>}:failed   "budget <limit> <reset>" | "fetch <message>"
--
-- Returns {has value (1/0), value, pttl ms, lifetime ms (0 unknown),
--          has failure (1/0), failure, failure pttl ms}.

local r = {0, '', 0, 0, 0, '', 0}
local v = redis.call('HMGET', KEYS[1], 'value', 'life')
if v[1] then
  r[1] = 1
  r[2] = v[1]
  r[3] = redis.call('PTTL', KEYS[1])
  r[4] = tonumber(v[2] or '0') or 0
end
local f = redis.call('GET', KEYS[2])
if f then
  r[5] = 1
  r[6] = f
  r[7] = redis.call('PTTL', KEYS[2])
end
return r
