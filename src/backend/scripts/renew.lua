-- renew.lua: extend a lease that is still ours; never re-create one, except as
-- an explicit quorum repair.
--
-- KEYS[1]  lease hash <prefix>{<name>}:lease
-- KEYS[2]  fence      <prefix>{<name>}:fence
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  (quorum only) our fencing token: re-create the lease if it is missing
-- ARGV[4]  (quorum only) our value
--
-- Returns {1} renewed (or repaired), or {0, why}: why is the current holder id,
-- "" when the lease is gone, or "foreign type <t>" when something else
-- overwrote the key.
--
-- Repair is safe only because the quorum client sends it while a majority of
-- nodes still hold the lease for us (before its safety deadline): nobody else
-- can hold a majority then, and a key held by someone else is never touched.

local ty = redis.call('TYPE', KEYS[1])['ok']
if ty == 'none' then
  if ARGV[3] then
    local tok = ARGV[3]
    redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'value', ARGV[4] or '', 'token', tok, 'ttl', ARGV[2])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
    local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    if tonumber(tok) > last then redis.call('SET', KEYS[2], tok) end
    return {1}
  end
  return {0, ''}
end
if ty ~= 'hash' then return {0, 'foreign type ' .. ty} end
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder ~= ARGV[1] then return {0, holder or ''} end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1}
