-- acquire.lua: take a free lease, issuing a fencing token.
--
-- KEYS[1]  lease hash   <prefix>{<name>}:lease   fields holder, value, token, ttl
-- KEYS[2]  fence        <prefix>{<name>}:fence   last token issued (no TTL)
-- KEYS[3]  epoch marker <prefix>epoch            Redis time (ms) this Redis was first seen (no TTL)
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  holder value (free text, may be empty)
-- ARGV[4]  event channel <prefix>{<name>}:events
--
-- Returns one of
--   {1, token}                            acquired; token is a decimal string
--   {0, pttl, holder, value, token}       held by someone else
--   {2, wait_ms}                          this Redis lost its data recently: quarantine
-- Errors: "LEASEHOLD_FOREIGN <key> <type>" when a key has a type we did not write.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])

local function check_type(key, want)
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and ty ~= want then
    return redis.error_reply('LEASEHOLD_FOREIGN ' .. key .. ' ' .. ty)
  end
  return ty
end

local ty = check_type(KEYS[1], 'hash')
if type(ty) == 'table' then return ty end
if ty == 'hash' then
  local h = redis.call('HMGET', KEYS[1], 'holder', 'value', 'token')
  return {0, redis.call('PTTL', KEYS[1]), h[1] or '', h[2] or '', h[3] or '0'}
end

local e = check_type(KEYS[2], 'string')
if type(e) == 'table' then return e end
e = check_type(KEYS[3], 'string')
if type(e) == 'table' then return e end

-- A missing epoch marker means this Redis is new or lost its data, so a holder
-- from before may still be running on its own deadline. Nobody starts until one
-- TTL after the marker was written: by then every earlier holder's deadline
-- (last renewal sent before the wipe, plus at most one TTL) has passed.
local born = redis.call('GET', KEYS[3])
if not born then
  redis.call('SET', KEYS[3], string.format('%.0f', now_ms))
  born = now_ms
end
local ready = tonumber(born) + ttl
if now_ms < ready then
  return {2, ready - now_ms}
end

-- Tokens never go backwards: one more than the last one this Redis remembers,
-- and never below Redis's own clock in microseconds, which still holds after the
-- counter itself was lost (restart without persistence, failover to a lagging replica).
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local token = math.max(last + 1, now_us)
local tok = string.format('%.0f', token)
redis.call('SET', KEYS[2], tok)
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'value', ARGV[3], 'token', tok, 'ttl', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[4], 'acquired ' .. tok)
return {1, tok}
