-- run_note.lua: `leasehold run` notes how a holder's job is contained, for
-- `leasehold status` (issue 13); nothing of the protocol reads it.
--
-- KEYS[1]  notes  <prefix>{<name>}:run     hash: holder id -> note
-- KEYS[2]  name record <prefix>{<name>}:lease
-- KEYS[3]  slots  <prefix>{<name>}:slots   (a semaphore's holders)
-- ARGV[1]  holder id
-- ARGV[2]  the note (e.g. "contain=pidns"); "" removes ours
--
-- Notes of holders that no longer hold the name (crashed supervisors) are
-- dropped on the way, so the hash stays as small as the set of holders. A
-- hash larger than any set of holders leasehold keeps (someone else filled
-- it) is dropped whole rather than walked: a script blocks the server.
-- Returns 1, or 0 when a key is of a type leasehold did not write (nothing
-- is changed then).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function failed(r) return type(r) == 'table' and r['err'] ~= nil end

local rec = redis.pcall('HMGET', KEYS[2], 'holder', 'exp')
if failed(rec) then return 0 end
local n = redis.pcall('HLEN', KEYS[1])
if failed(n) then return 0 end
if n > 1000 then redis.call('DEL', KEYS[1]) end
local fields = redis.call('HKEYS', KEYS[1])
for _, h in ipairs(fields) do
  if h ~= ARGV[1] then
    local held = h == rec[1] and (tonumber(rec[2]) or 0) > now
    if not held then
      local s = redis.pcall('ZSCORE', KEYS[3], h)
      held = not failed(s) and s and (tonumber(s) or 0) > now
    end
    if not held then redis.call('HDEL', KEYS[1], h) end
  end
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
