-- sem_release.lua: give our slot back, and hand it straight to the first
-- waiter in line. (Runs after prelude.lua.)
--
-- KEYS[1]  slots       <prefix>{<name>}:slots
-- KEYS[2]  slot info   <prefix>{<name>}:slotinfo
-- KEYS[3]  name record <prefix>{<name>}:lease    token, run, maxttl, w, qu, obs,
--                                                 kind, holder, exp
-- KEYS[4]  marker      <prefix>epoch (its longest TTL is raised by a grant)
-- KEYS[5]  queue       <prefix>{<name>}:queue
-- KEYS[6]  queue info  <prefix>{<name>}:qinfo
-- ARGV[1]  holder id
-- ARGV[2]  event channel <prefix>{<name>}:events
-- ARGV[3]  limit (N): a slot is handed on only while fewer than N are live
--          (and fewer than the head's own limit, from its queue entry)
--
-- With waiters in line, the first live one gets the freed slot at once, as a
-- lease is granted (release.lua): a new token, its TTL and value, an expiry
-- of only the claim window (prelude.lua, claim_ms) until it claims the slot
-- (sem_renew.lua with the token); a waiter that died meanwhile frees it
-- after that window. Publishes "granted <token> <head> <claim ms> <next>" to
-- the head's inbox and to next's (the waiter after it, who comes when the
-- grant lapses); on the name's channel only when someone observes.
-- Without waiters: "released <token>", only when someone observes.
-- Returns 1 released (or handed on), 0 not ours (expired, or never held: an
-- expired slot is removed, and nothing is handed on for it).

local exp = redis.pcall('ZSCORE', KEYS[1], ARGV[1])
if failed(exp) or not exp then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.pcall('HDEL', KEYS[2], ARGV[1])
local run, now, now_us = server()
if tonumber(exp) <= now then return 0 end
local r = redis.pcall('HMGET', KEYS[3], 'qu', 'obs', 'token', 'run', 'maxttl', 'w', 'kind', 'holder', 'exp')
if failed(r) then return 1 end
local tok = r[3] or '0'
-- A lease held under the name (used as both kinds): nothing to hand on.
if r[7] == 'lease' and (r[8] or '') ~= '' and num(r[9]) > now then return 1 end

if r[1] then
  local ok, head, info, next, next_info = pcall(live_two, KEYS[5], KEYS[6], now)
  if not ok then head, next = nil, nil end
  local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
  local _, ttl, inbox, value, slots = entry(info)
  if head and slots > 0 and live < math.min(tonumber(ARGV[3]) or 1, slots)
    and trusted(r[4], r[6], run) then
    local claim = claim_ms(ttl)
    tok = string.format('%.0f', math.max(num(r[3]) + 1, now_us))
    -- w: the head's writes are not known to be confirmed by replicas.
    redis.call('HSET', KEYS[3], 'kind', 'sem', 'token', tok, 'run', run, 'w', '0')
    raise_maxttl(KEYS[3], KEYS[4], run, ttl, r[5])
    redis.call('ZADD', KEYS[1], now + claim, head)
    redis.call('HSET', KEYS[2], head, tok .. ' ' .. value)
    for i = 1, 2 do
      if redis.call('PTTL', KEYS[i]) < claim then redis.call('PEXPIRE', KEYS[i], claim) end
    end
    hand_on(KEYS[3], KEYS[5], KEYS[6], head, inbox, next, next_info, tok, claim, ARGV[2], num(r[2]), now)
    return 1
  end
  if head then
    -- This server may lack recent writes, the head waits for a lease, or
    -- the head's limit is lower: it must attempt (and be checked) itself.
    tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head)
    return 1
  end
  if ok then redis.call('HDEL', KEYS[3], 'qu') end
end
if num(r[2]) > now then redis.call('PUBLISH', ARGV[2], 'released ' .. tok) end
return 1
