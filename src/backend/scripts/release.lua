-- release.lua: delete a lease only if we hold it, and wake the waiters.
--
-- KEYS[1]  lease hash <prefix>{<name>}:lease
-- ARGV[1]  holder id
-- ARGV[2]  event channel <prefix>{<name>}:events
--
-- Returns 1 released, 0 not ours (gone, someone else's, or a foreign type).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
if h[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'released ' .. (h[2] or '0'))
return 1
