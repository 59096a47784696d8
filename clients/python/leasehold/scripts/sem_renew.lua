-- sem_renew.lua: extend our slot if it is still ours and unexpired; never re-create.
--
-- KEYS[1]  slots <prefix>{<name>}:slots
-- KEYS[2]  info  <prefix>{<name>}:slotinfo
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
--
-- Returns {1} renewed, or {0, ""} when the slot is gone or expired.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp or tonumber(exp) <= now_ms then return {0, ''} end
redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, ARGV[1])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {1}
