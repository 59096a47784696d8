-- sem_renew.lua: extend our slot if it is still ours and unexpired; never
-- re-create. (Runs after prelude.lua.)
--
-- KEYS[1]  slots  <prefix>{<name>}:slots
-- KEYS[2]  info   <prefix>{<name>}:slotinfo
-- KEYS[3]  name record <prefix>{<name>}:lease
-- KEYS[4]  marker      <prefix>epoch
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  how many replicas the caller's WAIT asks for ("" or 0: none): a
--          renewal that WAIT may not confirm on every replica lowers the
--          record's `w` (only sem_acquire raises it: all live slots must be)
-- ARGV[4]  (claiming a grant) the grant's token: renewed only if the slot is
--          still ours with exactly this token ("" or absent: a plain renewal)
--
-- Returns {1} renewed, or {0, why} when the slot is gone or expired (why "") or
-- was granted anew (the grant lapsed and came back with another token). A refusal
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
local expect = ARGV[4]
if expect and expect ~= '' then
  local info = redis.call('HGET', KEYS[2], ARGV[1]) or ''
  if string.match(info, '^(%d+)') ~= expect then
    return {0, 'the grant lapsed and the slot was handed on'}
  end
end
redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, ARGV[1])
local w = redis.pcall('HGET', KEYS[3], 'w')
if w == '1' and confirmed_by_all(ARGV[3]) == '0' then redis.call('HSET', KEYS[3], 'w', '0') end
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {1}
