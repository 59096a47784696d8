-- leave.lua: give up a place in a lease's queue (a waiter that stopped waiting).
--
-- KEYS[1]  queue        <prefix>{<name>}:queue
-- KEYS[2]  queue expiry <prefix>{<name>}:qexp
-- KEYS[3]  lease hash   <prefix>{<name>}:lease
-- ARGV[1]  waiter (holder) id
-- ARGV[2]  event channel <prefix>{<name>}:events
--
-- If the leaver was first in line and the lease is free, the next waiter must
-- not sleep on: publishes "released 0 <new head>" then. Returns 1 if it was queued.

if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
local was_head = redis.call('ZRANGE', KEYS[1], 0, 0)[1] == ARGV[1]
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then redis.call('ZREM', KEYS[2], ARGV[1]) end
if was_head and redis.call('EXISTS', KEYS[3]) == 0 then
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if head then redis.call('PUBLISH', ARGV[2], 'released 0 ' .. head) end
end
return n
