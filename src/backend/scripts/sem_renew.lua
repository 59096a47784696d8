-- sem_renew.lua: extend our slot if it is still ours and unexpired; never
-- re-create. (Runs after prelude.lua.)
--
-- KEYS[1]  slots  <prefix>{<name>}:slots
-- KEYS[2]  info   <prefix>{<name>}:slotinfo
-- KEYS[3]  name record <prefix>{<name>}:lease
-- KEYS[4]  marker      <prefix>epoch
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
--
-- Returns {1} renewed, or {0, ""} when the slot is gone or expired. A refusal
-- by a server that did not grant the slot records our TTL in its quarantine,
-- as renew.lua does.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp or tonumber(exp) <= now_ms then
  local rec_run = redis.pcall('HGET', KEYS[3], 'run')
  if not failed(rec_run) then note_refused(KEYS[3], KEYS[4], ttl, rec_run or nil) end
  return {0, ''}
end
redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, ARGV[1])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {1}
