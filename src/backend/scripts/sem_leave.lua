-- sem_leave.lua: a semaphore waiter that stopped waiting leaves the line; and
-- gives back a slot a release handed to it meanwhile. (Runs after prelude.lua.)
--
-- KEYS[1]  slots       <prefix>{<name>}:slots
-- KEYS[2]  slot info   <prefix>{<name>}:slotinfo
-- KEYS[3]  name record <prefix>{<name>}:lease
-- KEYS[4]  queue       <prefix>{<name>}:queue
-- KEYS[5]  queue info  <prefix>{<name>}:qinfo
-- ARGV[1]  waiter (holder) id
-- ARGV[2]  event channel <prefix>{<name>}:events
-- ARGV[3]  limit (N)
--
-- When a slot is free afterwards (ours given back, or the leaver was in line
-- for one), or the leaver was first in line (it was to come when a grant to
-- a waiter that died lapses, and nobody else was told), the first live
-- waiter must not sleep on: publishes "released <token> <head>" to it then.
-- Returns 1 if it was queued or held a slot.

-- Keys of another type were not written by leasehold: left alone.
for _, i in ipairs({1, 4}) do
  local ty = redis.call('TYPE', KEYS[i])['ok']
  if ty ~= 'zset' and ty ~= 'none' then return 0 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local was_head = redis.call('ZRANGE', KEYS[4], 0, 0)[1] == ARGV[1]
local n = redis.call('ZREM', KEYS[4], ARGV[1])
if n == 1 and redis.call('TYPE', KEYS[5])['ok'] == 'hash' then redis.call('HDEL', KEYS[5], ARGV[1]) end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  -- Handed to us after we stopped waiting (or an attempt's reply was lost).
  if redis.call('TYPE', KEYS[2])['ok'] == 'hash' then redis.call('HDEL', KEYS[2], ARGV[1]) end
  n = 1
end
if n == 0 then return 0 end
if was_head or redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') < (tonumber(ARGV[3]) or 1) then
  local ok, head, info = pcall(live_head, KEYS[4], KEYS[5], now)
  if ok and head then
    local _, _, inbox = entry(info)
    local tok = redis.pcall('HGET', KEYS[3], 'token')
    if failed(tok) or not tok then tok = '0' end
    tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head)
  end
end
-- The line may be empty now (we left, lapsed places went on the way): its
-- keys are gone, and the next place must set their expiry again.
if redis.call('EXISTS', KEYS[4]) == 0 then redis.pcall('HDEL', KEYS[3], 'qu') end
return 1
