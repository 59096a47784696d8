-- release.lua: delete a lease only if we hold it, and hand it to the next in line.
--
-- KEYS[1]  lease hash   <prefix>{<name>}:lease
-- KEYS[2]  queue        <prefix>{<name>}:queue
-- KEYS[3]  queue expiry <prefix>{<name>}:qexp
-- ARGV[1]  holder id
-- ARGV[2]  event channel <prefix>{<name>}:events
--
-- Publishes "released <token> <head>" (head empty when nobody waits): only the
-- waiter named `head` retries, so a release costs one attempt, not one per waiter.
-- Returns 1 released, 0 not ours (gone, someone else's, or a foreign type).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
if h[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local head = ''
if redis.call('TYPE', KEYS[2])['ok'] == 'zset' and redis.call('TYPE', KEYS[3])['ok'] == 'zset' then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  for _, w in ipairs(lapsed) do redis.call('ZREM', KEYS[2], w) end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms) end
  head = redis.call('ZRANGE', KEYS[2], 0, 0)[1] or ''
end
redis.call('PUBLISH', ARGV[2], 'released ' .. (h[2] or '0') .. ' ' .. head)
return 1
