-- proclaim.lua: change the value others read, only while we hold the lease.
--
-- KEYS[1]  lease hash <prefix>{<name>}:lease
-- ARGV[1]  holder id
-- ARGV[2]  new value
-- ARGV[3]  event channel <prefix>{<name>}:events
--
-- Returns 1 done, 0 not ours.

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
if h[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'proclaimed ' .. (h[2] or '0'))
return 1
