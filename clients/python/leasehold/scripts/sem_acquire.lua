-- sem_acquire.lua: take one of `limit` slots of a semaphore; or join its
-- queue. (Runs after prelude.lua.)
--
-- KEYS[1]  slots       <prefix>{<name>}:slots    zset: holder id -> expiry (Redis ms)
-- KEYS[2]  slot info   <prefix>{<name>}:slotinfo hash: holder id -> "<token> <value>"
-- KEYS[3]  name record <prefix>{<name>}:lease    token, run, maxttl, kind, qu (prelude.lua)
-- KEYS[4]  marker      <prefix>epoch
-- KEYS[5]  queue       <prefix>{<name>}:queue    as for a lease (acquire.lua)
-- KEYS[6]  queue info  <prefix>{<name>}:qinfo    as for a lease
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  value (free text)
-- ARGV[4]  limit (N)
-- ARGV[5]  event channel <prefix>{<name>}:events
-- ARGV[6]  how many replicas the caller's WAIT asks for (as in acquire.lua)
-- ARGV[7]  "wait": keep a place in the queue when not acquired; "try" (or
--          absent): do not
-- ARGV[8]  registration margin in milliseconds (as in acquire.lua)
-- ARGV[9]  the caller's inbox channel (as in acquire.lua)
--
-- Returns {1, token} acquired (also when the slot already was ours: an earlier
-- attempt whose reply was lost, or a grant on release; extended from now
-- then); {0, wait_ms, used, first, last_token} all N slots taken (the earliest
-- expires in wait_ms; first = 1 when we are first in line; last_token: the
-- name's last token, so that a grant with a larger one is known to be newer
-- than this attempt); {2, wait_ms} quarantine (see prelude.lua);
-- {3, wait_ms, head} a slot is free, but the waiters in line before us take
-- the free slots (head: the first of them; the earliest of their places
-- lapses in wait_ms). Error "LEASEHOLD_KIND lease": the name is a held lease.
-- Every holder's slot expires on its own, by Redis's clock: a crashed holder
-- frees its slot after one TTL and leaves nothing behind.

local me, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local waiting, margin = ARGV[7] == 'wait', tonumber(ARGV[8]) or 0
local inbox = ARGV[9]
if not inbox or inbox == '' then inbox = '-' end
local run, now, now_us, uptime = server()

local function foreign(i)
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[i] .. ' ' .. redis.call('TYPE', KEYS[i])['ok'])
end

-- Which of the queue's two keys is of a type we did not write.
local function foreign_queue()
  local ty = redis.call('TYPE', KEYS[5])['ok']
  if ty ~= 'zset' and ty ~= 'none' then return foreign(5) end
  return foreign(6)
end

local r = redis.pcall('HMGET', KEYS[3], 'kind', 'holder', 'exp', 'token', 'run', 'maxttl', 'obs', 'w', 'qu')
if failed(r) then return foreign(3) end
if r[1] == 'lease' and (r[2] or '') ~= '' and num(r[3]) > now then
  return redis.error_reply('LEASEHOLD_KIND lease')
end
local qu = num(r[9])

local expired = redis.pcall('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if failed(expired) then return foreign(1) end
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

-- Keep (or take) our place in line until `wait_ms` from now plus the margin.
local function queue_up(wait_ms)
  if not waiting then return true end
  local until_ms = now + wait_ms + margin
  return join_line(KEYS[5], KEYS[6], KEYS[3], me, now_us, until_ms, ttl,
    until_ms .. ' ' .. ttl .. ' ' .. limit .. ' ' .. inbox .. ' ' .. ARGV[3], qu)
end

local function leave_line()
  if qu > 0 and not failed(redis.pcall('ZREM', KEYS[5], me)) then
    redis.pcall('HDEL', KEYS[6], me)
    if redis.call('EXISTS', KEYS[5]) == 0 then redis.call('HDEL', KEYS[3], 'qu') end
  end
end

if redis.call('ZSCORE', KEYS[1], me) then
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, me)
  keep(now + ttl)
  leave_line()
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
  local wait = math.max((first or now) - now, 0)
  if not queue_up(wait) then return foreign_queue() end
  local is_first = 0
  if waiting and redis.call('ZRANK', KEYS[5], me) == 0 then is_first = 1 end
  return {0, wait, used, is_first, r[4] or '0'}
end

local ready = ready_at(KEYS[4], run, now, uptime, r[5], r[6] and num(r[6]) or (r[4] and 0 or nil), ttl, true, r[8])
if not ready then return foreign(4) end
if now < ready then
  if not queue_up(ready - now) then return foreign_queue() end
  return {2, ready - now}
end

-- First come, first served: the free slots go to the first live waiters in
-- line. Lapsed places (waiters that stopped coming) leave the line on the way.
if qu > 0 then
  local free, ahead, i, soonest, head = limit - used, 0, 0, nil, nil
  local ok, err = pcall(function()
    while ahead < free do
      local h = redis.call('ZRANGE', KEYS[5], i, i)[1]
      if not h or h == me then return end
      if not is_holder_id(h) then
        i = i + 1
      else
        local lapse = num(string.match(redis.call('HGET', KEYS[6], h) or '', '^(%d+)'))
        if lapse > now then
          ahead, i = ahead + 1, i + 1
          head = head or h
          soonest = math.min(soonest or lapse, lapse)
        else
          redis.call('ZREM', KEYS[5], h)
          redis.call('HDEL', KEYS[6], h)
        end
      end
    end
  end)
  if not ok then return foreign_queue() end
  if ahead >= free then
    if not queue_up(soonest - now) then return foreign_queue() end
    return {3, soonest - now, head}
  end
  leave_line()
end

local tok = string.format('%.0f', math.max(num(r[4]) + 1, now_us))
-- Trusted after a failover only while every live slot was confirmed so.
local w = confirmed_by_all(ARGV[6])
if used > 0 and r[8] ~= '1' then w = '0' end
-- A lease's holder (expired: the checks above) is no holder of a semaphore:
-- its late release must not hand anything on.
redis.call('HSET', KEYS[3], 'kind', 'sem', 'token', tok, 'run', run, 'w', w, 'holder', '', 'value', '')
raise_maxttl(KEYS[3], KEYS[4], run, ttl, r[6])
redis.call('ZADD', KEYS[1], now + ttl, me)
redis.call('HSET', KEYS[2], me, tok .. ' ' .. ARGV[3])
keep(now + ttl)
if num(r[7]) > now then redis.call('PUBLISH', ARGV[5], 'acquired ' .. tok) end
return {1, tok}
