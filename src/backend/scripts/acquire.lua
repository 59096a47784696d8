-- acquire.lua: take a free lease, issuing a fencing token; or join its queue.
-- (Runs after prelude.lua.)
--
-- KEYS[1]  name record <prefix>{<name>}:lease   (see prelude.lua)
-- KEYS[2]  queue       <prefix>{<name>}:queue   zset: waiter id -> arrival (Redis us)
-- KEYS[3]  queue info  <prefix>{<name>}:qinfo   hash: waiter id -> "<lapse ms> <ttl ms> 0 <inbox> <value>"
--                                                (0: a lease waiter; see prelude.lua, entry)
-- KEYS[4]  marker      <prefix>epoch            "<run_id> <base ms> <longest ttl ms>"
-- KEYS[5]  slots       <prefix>{<name>}:slots   (read only when the name is a semaphore)
-- ARGV[1]  holder id
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  holder value (free text, may be empty)
-- ARGV[4]  event channel <prefix>{<name>}:events
-- ARGV[5]  "wait": keep a place in the queue when not acquired; "try": do not
-- ARGV[6]  registration margin in milliseconds (how long past its next retry a
--          waiter's place is kept)
-- ARGV[7]  how many replicas the caller's WAIT asks for (--min-replicas; "" or 0:
--          none): the record is marked trusted after a failover only if that
--          covers every connected replica (prelude.lua, confirmed_by_all)
-- ARGV[8]  the caller's inbox channel <prefix>inbox:<id>: a release hands the
--          lease over there (absent or "": on the name's channel)
--
-- Returns one of
--   {1, token}                          acquired; token is a decimal string (also when
--                                       the lease already was ours: an earlier attempt
--                                       whose reply was lost; extended from now then)
--   {0, pttl, holder, value, token, first}
--                                       held by someone else; first = 1 when we are
--                                       first in line (the only one that must be on time)
--   {2, wait_ms}                        this server may lack recent writes: quarantine
--   {3, wait_ms, head}                  free, but waiter `head` is first in line; its
--                                       place lapses in wait_ms
-- Errors: "LEASEHOLD_FOREIGN <key> <type>" (a key of a type we did not write),
--         "LEASEHOLD_KIND sem" (the name is in use as a semaphore).

local me, ttl, value = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local waiting, margin = ARGV[5] == 'wait', tonumber(ARGV[6])
local inbox = ARGV[8]
if not inbox or inbox == '' then inbox = '-' end
local run, now, now_us, uptime = server()

local function foreign(i, want)
  local ty = redis.call('TYPE', KEYS[i])['ok']
  return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[i] .. ' ' .. (ty == want and 'unknown' or ty))
end

local r = redis.pcall('HMGET', KEYS[1], 'kind', 'holder', 'exp', 'token', 'run', 'maxttl', 'qu', 'obs', 'value', 'w')
if failed(r) then return foreign(1, 'hash') end
local kind, holder, exp, last = r[1], r[2] or '', num(r[3]), num(r[4])
local qu, obs = num(r[7]), num(r[8])

if kind == 'sem' then
  local live = redis.pcall('ZCOUNT', KEYS[5], '(' .. now, '+inf')
  if failed(live) then return foreign(5, 'zset') end
  if live > 0 then return redis.error_reply('LEASEHOLD_KIND sem') end
end

-- Which of the queue's two keys is of a type we did not write.
local function foreign_queue()
  local ty = redis.call('TYPE', KEYS[2])['ok']
  if ty ~= 'zset' and ty ~= 'none' then return foreign(2, 'zset') end
  return foreign(3, 'hash')
end

-- Keep (or take) our place in line until `wait_ms` from now plus the margin.
local function queue_up(wait_ms)
  if not waiting then return true end
  local until_ms = now + wait_ms + margin
  return join_line(KEYS[2], KEYS[3], KEYS[1], me, now_us, until_ms, ttl,
    until_ms .. ' ' .. ttl .. ' 0 ' .. inbox .. ' ' .. value, qu)
end

if holder ~= '' and exp > now then
  if holder == me then
    -- An earlier attempt of ours took it (or a release granted it to us) and
    -- the reply was lost or not yet seen: extend it from now, so that the
    -- caller's deadline counted from this attempt's send instant holds.
    redis.call('HSET', KEYS[1], 'exp', now + ttl, 'ttl', ttl, 'value', value,
      'w', confirmed_by_all(ARGV[7]))
    if qu > 0 and not failed(redis.pcall('ZREM', KEYS[2], me)) then
      redis.pcall('HDEL', KEYS[3], me)
      if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('HDEL', KEYS[1], 'qu') end
    end
    return {1, r[4] or '0'}
  end
  if not queue_up(exp - now) then return foreign_queue() end
  local first = 0
  if waiting and redis.call('ZRANK', KEYS[2], me) == 0 then first = 1 end
  return {0, exp - now, holder, r[9] or '', r[4] or '0', first}
end

-- Free. Was the name last granted by this very server? If not, holders
-- confirmed by a predecessor may still be running: quarantine (prelude.lua).
local ready = ready_at(KEYS[4], run, now, uptime, r[5], r[6] and num(r[6]) or (r[4] and 0 or nil), ttl, true, r[10])
if not ready then return foreign(4, 'string') end
if now < ready then
  if not queue_up(ready - now) then return foreign_queue() end
  return {2, ready - now}
end

-- First come, first served: a free lease goes to the first live waiter.
if qu > 0 then
  local ok, head = pcall(live_head, KEYS[2], KEYS[3], now)
  if not ok then return foreign_queue() end
  if head and head ~= me then
    local info = redis.call('HGET', KEYS[3], head)
    local lapses = num(string.match(info or '', '^(%d+)')) - now
    if not queue_up(lapses) then return foreign_queue() end
    return {3, lapses, head}
  end
  if head then
    redis.call('ZREM', KEYS[2], me)
    redis.call('HDEL', KEYS[3], me)
  end
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('HDEL', KEYS[1], 'qu') end
end

-- Tokens never go backwards: one more than the last one this name got, and
-- never below this server's clock in microseconds, which still holds when the
-- record itself was lost (restart, failover to a lagging replica).
local tok = string.format('%.0f', math.max(last + 1, now_us))
redis.call('HSET', KEYS[1], 'kind', 'lease', 'holder', me, 'value', value, 'exp', now + ttl,
  'ttl', ttl, 'token', tok, 'run', run, 'w', confirmed_by_all(ARGV[7]))
raise_maxttl(KEYS[1], KEYS[4], run, ttl, r[6])
if obs > now then redis.call('PUBLISH', ARGV[4], 'acquired ' .. tok) end
return {1, tok}
