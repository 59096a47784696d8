-- leave.lua: a waiter that stopped waiting leaves the line; and gives back a
-- lease a release handed to it meanwhile. (Runs after prelude.lua.)
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- KEYS[2]  queue       <prefix>{<name>}:queue
-- KEYS[3]  queue info  <prefix>{<name>}:qinfo
-- ARGV[1]  waiter (holder) id
-- ARGV[2]  event channel <prefix>{<name>}:events
--
-- If the leaver was first in line, the next waiter must not sleep on: the
-- lease may be free, or granted to a waiter that died (the leaver was to
-- come when that grant lapsed, and nobody else was told): publishes
-- "released <token> <new head>", and the new head attempts and learns when
-- to come.
-- Returns 1 if it was queued or held a grant.

local r = redis.pcall('HMGET', KEYS[1], 'holder', 'exp', 'token')
if failed(r) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then
  local was_head = redis.call('ZRANGE', KEYS[2], 0, 0)[1] == ARGV[1]
  n = redis.call('ZREM', KEYS[2], ARGV[1])
  if redis.call('TYPE', KEYS[3])['ok'] == 'hash' then redis.call('HDEL', KEYS[3], ARGV[1]) end
  if was_head and r[1] ~= ARGV[1] then
    local ok, head, info = pcall(live_head, KEYS[2], KEYS[3], now)
    if ok and head then
      local _, _, inbox = entry(info)
      tell(inbox, ARGV[2], 'released ' .. (r[3] or '0') .. ' ' .. head)
    end
  end
end
if r[1] == ARGV[1] then
  -- Handed to us after we stopped waiting: let the next one have it now
  -- rather than when the claim window lapses.
  redis.call('HSET', KEYS[1], 'holder', '', 'value', '')
  local ok, head, info = pcall(live_head, KEYS[2], KEYS[3], now)
  if ok and head then
    local _, _, inbox = entry(info)
    tell(inbox, ARGV[2], 'released ' .. (r[3] or '0') .. ' ' .. head)
  else
    redis.call('PUBLISH', ARGV[2], 'released ' .. (r[3] or '0'))
  end
  n = 1
end
-- The line may be empty now (we left, lapsed places went on the way): its
-- keys are gone, and the next place must set their expiry again.
if n == 1 and redis.call('EXISTS', KEYS[2]) == 0 then redis.call('HDEL', KEYS[1], 'qu') end
return n
