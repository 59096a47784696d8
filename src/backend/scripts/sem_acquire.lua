-- sem_acquire.lua: take one of `limit` slots of a semaphore. (Runs after prelude.lua.)
--
-- KEYS[1]  slots       <prefix>{<name>}:slots    zset: holder id -> expiry (Redis ms)
-- KEYS[2]  slot info   <prefix>{<name>}:slotinfo hash: holder id -> "<token> <value>"
-- KEYS[3]  name record <prefix>{<name>}:lease    token, run, maxttl, kind (prelude.lua)
-- KEYS[4]  marker      <prefix>epoch
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  value (free text)
-- ARGV[4]  limit (N)
-- ARGV[5]  event channel <prefix>{<name>}:events
-- ARGV[6]  how many replicas the caller's WAIT asks for (as in acquire.lua)
--
-- Returns {1, token} acquired (also when the slot already was ours: an earlier
-- attempt whose reply was lost; extended from now then); {0, wait_ms, used}
-- all N slots taken (the earliest expires in wait_ms); {2, wait_ms} quarantine
-- (see prelude.lua). Error "LEASEHOLD_KIND lease": the name is a held lease.
-- Every holder's slot expires on its own, by Redis's clock: a crashed holder
-- frees its slot after one TTL and leaves nothing behind.

local me, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local run, now, now_us, uptime = server()

local r = redis.pcall('HMGET', KEYS[3], 'kind', 'holder', 'exp', 'token', 'run', 'maxttl', 'obs', 'w')
if failed(r) then
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[3] .. ' ' .. redis.call('TYPE', KEYS[3])['ok'])
end
if r[1] == 'lease' and (r[2] or '') ~= '' and num(r[3]) > now then
  return redis.error_reply('LEASEHOLD_KIND lease')
end

local expired = redis.pcall('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if failed(expired) then
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[1] .. ' ' .. redis.call('TYPE', KEYS[1])['ok'])
end
for _, h in ipairs(expired) do
  if is_holder_id(h) then
    redis.call('ZREM', KEYS[1], h)
    redis.call('HDEL', KEYS[2], h)
  end
end

local function keep(until_ms)
  for i = 1, 2 do
    if redis.call('PTTL', KEYS[i]) < until_ms - now then redis.call('PEXPIREAT', KEYS[i], until_ms) end
  end
end

if redis.call('ZSCORE', KEYS[1], me) then
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, me)
  keep(now + ttl)
  local info = redis.call('HGET', KEYS[2], me) or '0'
  return {1, string.match(info, '^(%d+)') or '0'}
end

-- The live slots (members of another shape are not ours: not counted).
local used, first = 0, nil
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  if is_holder_id(live[i]) then
    used = used + 1
    first = first or tonumber(live[i + 1])
  end
end
if used >= limit then
  return {0, math.max(first - now, 0), used}
end

local ready = ready_at(KEYS[4], run, now, uptime, r[5], r[6] and num(r[6]) or (r[4] and 0 or nil), ttl, true, r[8])
if not ready then
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[4] .. ' ' .. redis.call('TYPE', KEYS[4])['ok'])
end
if now < ready then return {2, ready - now} end

local tok = string.format('%.0f', math.max(num(r[4]) + 1, now_us))
-- Trusted after a failover only while every live slot was confirmed so.
local w = confirmed_by_all(ARGV[6])
if used > 0 and r[8] ~= '1' then w = '0' end
redis.call('HSET', KEYS[3], 'kind', 'sem', 'token', tok, 'run', run, 'w', w)
if ttl > num(r[6]) then
  redis.call('HSET', KEYS[3], 'maxttl', ttl)
  note_ttl(KEYS[4], run, ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, me)
redis.call('HSET', KEYS[2], me, tok .. ' ' .. ARGV[3])
keep(now + ttl)
if num(r[7]) > now then redis.call('PUBLISH', ARGV[5], 'acquired ' .. tok) end
return {1, tok}
