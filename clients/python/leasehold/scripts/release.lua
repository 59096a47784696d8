-- release.lua: give a lease back if we hold it, and hand it straight to the
-- first waiter in line. (Runs after prelude.lua.)
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- KEYS[2]  queue       <prefix>{<name>}:queue
-- KEYS[3]  queue info  <prefix>{<name>}:qinfo
-- KEYS[4]  marker      <prefix>epoch (its longest TTL is raised by a grant)
-- ARGV[1]  holder id
-- ARGV[2]  event channel <prefix>{<name>}:events
-- ARGV[3]  "always" to publish "released" even when nobody observes (quorum
--          waiters, who have no queue, listen for it); "" otherwise
--
-- With waiters in line, the first live one becomes the holder at once: a new
-- token, its own TTL and value, but an expiry of only the claim window
-- (prelude.lua, claim_ms): it must renew (claim) within that window, so a
-- waiter that died meanwhile strands the lease for no longer than that.
-- Publishes "granted <token> <head> <claim ms> <next>" (next: the waiter after
-- it, who takes over a lapsed grant) to the head's inbox, to next's inbox if
-- it is another one, and on the name's channel only when someone observes.
-- Without waiters: "released <token>", only when someone observes or ARGV[3]
-- asks for it.
-- Returns 1 released (or handed on), 0 not ours (gone, someone else's, foreign).

local r = redis.pcall('HMGET', KEYS[1], 'holder', 'token', 'qu', 'obs', 'run', 'maxttl', 'w', 'kind')
-- kind 'sem': our lease expired and the name became a semaphore.
if failed(r) or r[1] ~= ARGV[1] or r[8] == 'sem' then return 0 end
local tok = r[2] or '0'

if r[3] then
  local run, now, now_us = server()
  local ok, head, info, next, next_info = pcall(live_two, KEYS[2], KEYS[3], now)
  if not ok then head, next = nil, nil end
  local _, ttl, inbox, value, slots = entry(info)
  if head and slots == 0 and trusted(r[5], r[7], run) then
    local claim = claim_ms(ttl)
    tok = string.format('%.0f', math.max(num(r[2]) + 1, now_us))
    -- w: the head's writes are not known to be confirmed by replicas.
    redis.call('HSET', KEYS[1], 'holder', head, 'value', value, 'exp', now + claim,
      'ttl', ttl, 'token', tok, 'run', run, 'w', '0')
    raise_maxttl(KEYS[1], KEYS[4], run, ttl, r[6])
    hand_on(KEYS[1], KEYS[2], KEYS[3], head, inbox, next, next_info, tok, claim, ARGV[2], num(r[4]), now)
    return 1
  end
  redis.call('HSET', KEYS[1], 'holder', '', 'value', '')
  if head then
    -- This server may lack recent writes (the record is older than it), or
    -- the head waits for a semaphore's slot: it must attempt (and be
    -- checked: quarantine, LEASEHOLD_KIND) itself.
    tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head)
    return 1
  end
  if ok then redis.call('HDEL', KEYS[1], 'qu') end
else
  redis.call('HSET', KEYS[1], 'holder', '', 'value', '')
end
if ARGV[3] == 'always' then
  redis.call('PUBLISH', ARGV[2], 'released ' .. tok)
elseif r[4] then
  local t = redis.call('TIME')
  if num(r[4]) > tonumber(t[1]) * 1000 then
    redis.call('PUBLISH', ARGV[2], 'released ' .. tok)
  else
    redis.call('HDEL', KEYS[1], 'obs')
  end
end
return 1
