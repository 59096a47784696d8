-- renew.lua: extend a lease that is still ours; never re-create one.
--
-- KEYS[1]  lease hash <prefix>{<name>}:lease
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
--
-- Returns {1} renewed, or {0, why}: why is the current holder id, "" when the
-- lease is gone, or "foreign type <t>" when something else overwrote the key.

local ty = redis.call('TYPE', KEYS[1])['ok']
if ty == 'none' then return {0, ''} end
if ty ~= 'hash' then return {0, 'foreign type ' .. ty} end
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder ~= ARGV[1] then return {0, holder or ''} end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1}
