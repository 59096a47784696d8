-- sem_acquire.lua: take one of `limit` slots of a semaphore.
--
-- KEYS[1]  slots  <prefix>{<name>}:slots   zset: holder id -> expiry (Redis time, ms)
-- KEYS[2]  info   <prefix>{<name>}:slotinfo hash: holder id -> "<token> <value>"
-- KEYS[3]  fence  <prefix>{<name>}:fence   last token issued (shared with the lease)
-- KEYS[4]  epoch  <prefix>epoch            as in acquire.lua
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  value (free text)
-- ARGV[4]  limit (N)
-- ARGV[5]  event channel <prefix>{<name>}:events
--
-- Returns {1, token} acquired (also when the slot already was ours: an earlier
-- attempt whose reply was lost; extended then); {0, wait_ms, used} all N slots taken (the
-- earliest expires in wait_ms); {2, wait_ms} quarantine (see acquire.lua).
-- Every holder's slot expires on its own, by Redis's clock: a crashed holder
-- frees its slot after one TTL and leaves nothing behind.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
for _, h in ipairs(expired) do
  redis.call('ZREM', KEYS[1], h)
  redis.call('HDEL', KEYS[2], h)
end

if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  -- An earlier attempt of ours took a slot but its reply was lost: extend it
  -- from now and hand it over.
  redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, ARGV[1])
  for i = 1, 2 do
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  local info = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
  return {1, string.match(info, '^(%d+)') or '0'}
end

local used = redis.call('ZCARD', KEYS[1])
if used >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  return {0, math.max(tonumber(first) - now_ms, 0), used}
end

local born = redis.call('GET', KEYS[4])
if not born then
  redis.call('SET', KEYS[4], string.format('%.0f', now_ms))
  born = now_ms
end
local ready = tonumber(born) + ttl
if now_ms < ready then return {2, ready - now_ms} end

local last = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local tok = string.format('%.0f', math.max(last + 1, now_us))
redis.call('SET', KEYS[3], tok)
redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], tok .. ' ' .. ARGV[3])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
redis.call('PUBLISH', ARGV[5], 'acquired ' .. tok)
return {1, tok}
