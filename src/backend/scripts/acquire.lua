-- acquire.lua: take a free lease, issuing a fencing token; or join its queue.
--
-- KEYS[1]  lease hash   <prefix>{<name>}:lease   fields holder, value, token, ttl
-- KEYS[2]  fence        <prefix>{<name>}:fence   last token issued (no TTL)
-- KEYS[3]  epoch marker <prefix>epoch            Redis time (ms) this Redis was first seen (no TTL)
-- KEYS[4]  queue        <prefix>{<name>}:queue   zset: waiter id -> arrival (Redis time, us)
-- KEYS[5]  queue expiry <prefix>{<name>}:qexp    zset: waiter id -> registration expiry (Redis time, ms)
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  holder value (free text, may be empty)
-- ARGV[4]  event channel <prefix>{<name>}:events
-- ARGV[5]  "wait": join the queue when not acquired; "try": do not
-- ARGV[6]  registration margin in milliseconds (how long past its next retry a
--          waiter's place is kept)
--
-- Returns one of
--   {1, token}                            acquired; token is a decimal string (also
--                                         when the lease already was ours: an earlier
--                                         attempt whose reply was lost; extended then)
--   {0, pttl, holder, value, token}       held by someone else
--   {2, wait_ms}                          this Redis lost its data recently: quarantine
--   {3, wait_ms, head}                    free, but waiter `head` is first in line;
--                                         its place lapses in wait_ms
-- Errors: "LEASEHOLD_FOREIGN <key> <type>" when a key has a type we did not write.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
local me = ARGV[1]
local waiting = ARGV[5] == 'wait'
local margin = tonumber(ARGV[6])

-- Type checks cost a command each, so they run only after a command failed:
-- a key of a type we did not write then gets a precise error.
local function foreign_error()
  local want = {'hash', 'string', 'string', 'zset', 'zset'}
  for i = 1, 5 do
    local ty = redis.call('TYPE', KEYS[i])['ok']
    if ty ~= 'none' and ty ~= want[i] then
      return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[i] .. ' ' .. ty)
    end
  end
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[1] .. ' unknown')
end
local function failed(r) return type(r) == 'table' and r['err'] ~= nil end

-- Keep (or take) a place in line until `wait_ms` from now plus the margin.
local function queue_up(wait_ms)
  if not waiting then return end
  if failed(redis.pcall('ZADD', KEYS[4], 'NX', now_us, me)) then return end
  local until_ms = now_ms + wait_ms + margin
  if failed(redis.pcall('ZADD', KEYS[5], until_ms, me)) then return end
  local life = until_ms - now_ms
  for i = 4, 5 do
    if redis.call('PTTL', KEYS[i]) < life then redis.call('PEXPIRE', KEYS[i], life) end
  end
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  local h = redis.pcall('HMGET', KEYS[1], 'holder', 'value', 'token')
  if failed(h) then return foreign_error() end
  if h[1] == me then
    -- An earlier attempt of ours took it, but its reply was lost (timeout).
    -- Extend it from now, so that the caller's deadline counted from this
    -- attempt's send instant holds, and hand it over as acquired.
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('HSET', KEYS[1], 'value', ARGV[3], 'ttl', ARGV[2])
    redis.call('ZREM', KEYS[4], me)
    redis.call('ZREM', KEYS[5], me)
    return {1, h[3] or '0'}
  end
  local pttl = redis.call('PTTL', KEYS[1])
  queue_up(math.max(pttl, 0))
  return {0, pttl, h[1] or '', h[2] or '', h[3] or '0'}
end

-- A missing epoch marker means this Redis is new or lost its data, so a holder
-- from before may still be running on its own deadline. Nobody starts until one
-- TTL after the marker was written: by then every earlier holder's deadline
-- (last renewal sent before the wipe, plus at most one TTL) has passed.
local born = redis.pcall('GET', KEYS[3])
if failed(born) then return foreign_error() end
if not born then
  redis.call('SET', KEYS[3], string.format('%.0f', now_ms))
  born = now_ms
end
local ready = tonumber(born) + ttl
if now_ms < ready then
  queue_up(ready - now_ms)
  return {2, ready - now_ms}
end

-- First come, first served: a free lease goes to the head of the queue.
-- Waiters that stopped refreshing their place (crashed) leave it first.
local head = redis.pcall('ZRANGE', KEYS[4], 0, 0)
if failed(head) then return foreign_error() end
head = head[1]
if head then
  local lapsed = redis.pcall('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms)
  if failed(lapsed) then return foreign_error() end
  for _, w in ipairs(lapsed) do redis.call('ZREM', KEYS[4], w) end
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now_ms)
    head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
  end
end
if head and head ~= me then
  local lapses = tonumber(redis.call('ZSCORE', KEYS[5], head) or now_ms) - now_ms
  queue_up(lapses)
  return {3, lapses, head}
end
if head then
  redis.call('ZREM', KEYS[4], me)
  redis.call('ZREM', KEYS[5], me)
end

-- Tokens never go backwards: one more than the last one this Redis remembers,
-- and never below Redis's own clock in microseconds, which still holds after the
-- counter itself was lost (restart without persistence, failover to a lagging replica).
local last = redis.pcall('GET', KEYS[2])
if failed(last) then return foreign_error() end
local token = math.max((tonumber(last or '0') or 0) + 1, now_us)
local tok = string.format('%.0f', token)
redis.call('SET', KEYS[2], tok)
redis.call('HSET', KEYS[1], 'holder', me, 'value', ARGV[3], 'token', tok, 'ttl', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[4], 'acquired ' .. tok)
return {1, tok}
