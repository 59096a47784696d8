-- status.lua: read a lease without changing anything.
--
-- KEYS[1]  lease hash <prefix>{<name>}:lease
-- KEYS[2]  fence      <prefix>{<name>}:fence
--
-- Returns {pttl, holder, value, token, last_token}; pttl is -2 when free.
-- Errors: "LEASEHOLD_FOREIGN <key> <type>" when the key has a type we did not write.

local ty = redis.call('TYPE', KEYS[1])['ok']
if ty ~= 'none' and ty ~= 'hash' then
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[1] .. ' ' .. ty)
end
local last = redis.call('GET', KEYS[2]) or '0'
if ty == 'none' then return {-2, '', '', '0', last} end
local h = redis.call('HMGET', KEYS[1], 'holder', 'value', 'token')
return {redis.call('PTTL', KEYS[1]), h[1] or '', h[2] or '', h[3] or '0', last}
