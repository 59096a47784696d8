-- status.lua: read a lease without changing anything. (Runs after prelude.lua.)
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- KEYS[2]  marker      <prefix>epoch
--
-- Returns {pttl, holder, value, token, last_token, kind, quarantine_ms}:
-- pttl is -2 when free; quarantine_ms > 0 when an acquisition now would have
-- to wait that long because this server may lack recent writes.
-- Errors: "LEASEHOLD_FOREIGN <key> <type>" when the key has a type we did not write.

local ty = redis.call('TYPE', KEYS[1])['ok']
if ty ~= 'none' and ty ~= 'hash' then
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[1] .. ' ' .. ty)
end
local run, now, _, uptime = server()
local r = redis.call('HMGET', KEYS[1], 'holder', 'exp', 'value', 'token', 'kind', 'run', 'maxttl', 'ttl', 'w')
local last = r[4] or '0'
if (r[1] or '') ~= '' and num(r[2]) > now then
  return {num(r[2]) - now, r[1], r[3] or '', last, last, r[5] or 'lease', 0}
end
local ready = ready_at(KEYS[2], run, now, uptime, r[6], r[7] and num(r[7]) or (r[4] and 0 or nil),
  num(r[8]), false, r[9]) or 0
return {-2, '', '', '0', last, r[5] or 'lease', math.max(ready - now, 0)}
