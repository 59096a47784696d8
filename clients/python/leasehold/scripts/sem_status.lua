-- sem_status.lua: the holders of a semaphore, read-only.
--
-- KEYS[1]  slots <prefix>{<name>}:slots
-- KEYS[2]  info  <prefix>{<name>}:slotinfo
--
-- Returns a flat list: holder, ms left, "<token> <value>", ... (unexpired only).

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now_ms + 1, '+inf', 'WITHSCORES')
for i = 1, #entries, 2 do
  local h = entries[i]
  table.insert(out, h)
  table.insert(out, tonumber(entries[i + 1]) - now_ms)
  table.insert(out, redis.call('HGET', KEYS[2], h) or '0 ')
end
return out
