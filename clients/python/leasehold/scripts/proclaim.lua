-- proclaim.lua: change the value of a lease we hold.
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- ARGV[1]  holder id
-- ARGV[2]  new value
-- ARGV[3]  event channel <prefix>{<name>}:events
--
-- Publishes "proclaimed <token>" (observers re-read the value).
-- Returns 1 done, 0 not ours.

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local r = redis.call('HMGET', KEYS[1], 'holder', 'exp', 'token')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if r[1] ~= ARGV[1] or (tonumber(r[2]) or 0) <= now then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'proclaimed ' .. (r[3] or '0'))
return 1
