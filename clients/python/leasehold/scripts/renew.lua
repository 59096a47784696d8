-- renew.lua: extend a lease that is still ours; never re-create one, except as
-- an explicit quorum repair. Also the claim of a lease handed over on release.
-- (Runs after prelude.lua.)
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- KEYS[2]  marker      <prefix>epoch (a refusal on a server that did not grant the
--          lease raises the quarantine to our TTL: see note_refused)
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  (quorum only) our fencing token: re-create the lease if it is free
--          ("" or absent: no repair)
-- ARGV[4]  (quorum only) our value
-- ARGV[5]  (claiming a grant) the grant's token: renewed only if the lease is
--          still ours with exactly this token
-- ARGV[6]  how many replicas the caller's WAIT asks for (--min-replicas; "" or
--          0: none): every renewal re-marks the record `w` (prelude.lua,
--          confirmed_by_all) — lowered when a replica joined that the WAIT
--          may not cover, raised again (also after a grant) when it covers all
--
-- Returns {1} renewed (or repaired), or {0, why}: why is the current holder id,
-- "" when the lease is free or expired (by Redis's clock: an expired lease is
-- lost, never silently re-taken), or "foreign type <t>" when something else
-- overwrote the key.
--
-- Repair is safe only because the quorum client sends it while a majority of
-- nodes still hold the lease for us (before its safety deadline): nobody else
-- can hold a majority then, and a lease held by someone else is never touched.

local r = redis.pcall('HMGET', KEYS[1], 'holder', 'exp', 'token', 'run')
if failed(r) then return {0, 'foreign type ' .. redis.call('TYPE', KEYS[1])['ok']} end
local run, now = server()
local ttl = tonumber(ARGV[2])
local held = (r[1] or '') ~= '' and num(r[2]) > now
local expect = ARGV[5]
if held and r[1] == ARGV[1] and expect and expect ~= '' and r[3] ~= expect then
  return {0, 'the grant lapsed and the lease was handed on'}
end
if held and r[1] == ARGV[1] then
  -- Stamped with this server's run_id: the record was last written here,
  -- so a later failover back to a server with an older copy is noticed.
  redis.call('HSET', KEYS[1], 'exp', now + ttl, 'ttl', ttl, 'run', run,
    'w', confirmed_by_all(ARGV[6]))
  return {1}
end
if not held and ARGV[3] and ARGV[3] ~= '' then
  local tok = ARGV[3]
  if num(tok) < num(r[3]) then tok = r[3] end
  redis.call('HSET', KEYS[1], 'kind', 'lease', 'holder', ARGV[1], 'value', ARGV[4] or '',
    'exp', now + ttl, 'ttl', ttl, 'token', tok, 'w', confirmed_by_all(ARGV[6]))
  return {1}
end
note_refused(KEYS[1], KEYS[2], ttl, r[4])
if held then return {0, r[1]} end
return {0, ''}
