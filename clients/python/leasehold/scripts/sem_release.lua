-- sem_release.lua: give our slot back and wake a waiter.
--
-- KEYS[1]  slots <prefix>{<name>}:slots
-- KEYS[2]  info  <prefix>{<name>}:slotinfo
-- ARGV[1]  holder id
-- ARGV[2]  event channel <prefix>{<name>}:events
--
-- Publishes "released 0" (no queue: one waiter per process retries).
-- Returns 1 released, 0 not ours (expired or never held).

if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'released 0')
return 1
