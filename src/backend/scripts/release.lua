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

local h = redis.pcall('HMGET', KEYS[1], 'holder', 'token')
if h['err'] or h[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local head = redis.pcall('ZRANGE', KEYS[2], 0, 0)
if head['err'] then head = {} end
head = head[1]
if head then
  -- Skip waiters whose place lapsed (they crashed while waiting).
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local lapsed = redis.pcall('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if not lapsed['err'] and #lapsed > 0 then
    for _, w in ipairs(lapsed) do redis.call('ZREM', KEYS[2], w) end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
    head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  end
end
redis.call('PUBLISH', ARGV[2], 'released ' .. (h[2] or '0') .. ' ' .. (head or ''))
return 1
