-- prelude.lua: helpers shared by the lease and semaphore scripts. It is put in
-- front of each script that needs it (src/backend/scripts.rs; other clients
-- must do the same), so every script stays one atomic unit.
--
-- The name record <prefix>{<name>}:lease is a hash without a TTL:
--   kind    "lease" or "sem" (a name is used by one kind at a time)
--   holder  holder id ("" when free)            exp   Redis ms the holder holds it until
--   value   the holder's value                   ttl   the holder's TTL, ms
--   token   the last fencing token issued for the name
--   run     run_id of the server that last granted the name: while it matches
--           the server the script runs on, nothing was lost since
--   maxttl  the longest TTL granted for the name (the quarantine covers it)
--   qu      Redis ms until which waiters may be queued (absent: nobody queued)
--   obs     Redis ms until which someone observes the name's events
--   w       "1" when the name's writes are confirmed by replicas (WAIT, the
--           clients' --min-replicas): a promoted replica then has them all
-- A lease is held when holder ~= "" and exp > now, by Redis's clock.

local function failed(r) return type(r) == 'table' and r['err'] ~= nil end

-- This server's identity and clock, in one command: INFO server carries the
-- run_id (new on every start, different on a promoted replica) and the time.
local function server()
  local info = redis.call('INFO', 'server')
  -- One scan in the order Redis prints them (7.x); each on its own otherwise.
  local run, us, uptime = string.match(info,
    'run_id:(%x+).-server_time_usec:(%d+).-uptime_in_seconds:(%d+)')
  if not run then
    run = string.match(info, 'run_id:(%x+)') or '?'
    us = string.match(info, 'server_time_usec:(%d+)')
    uptime = string.match(info, 'uptime_in_seconds:(%d+)')
  end
  uptime = tonumber(uptime) or 0
  us = tonumber(us)
  if not us then
    local t = redis.call('TIME')
    us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return run, math.floor(us / 1000), us, uptime
end

-- A number field of a record: leasehold writes integers of at most 2^53
-- (exact in Lua); anything else (inf, nan, 1e400, garbage) was written by
-- something else and counts as 0 (an expiry long past), so that a waiter
-- neither spins on an "infinite" lease nor fails on arithmetic with it.
local function num(x)
  local n = tonumber(x)
  if n and n == n and n > -9007199254740992 and n < 9007199254740992 then return n end
  return 0
end

-- The shortest quarantine after a server is found new: long enough for the
-- holders of its predecessor to reconnect and be refused (which records
-- their TTLs here, see note_refused), whatever the contender's own TTL.
local ANNOUNCE_MS = 3000

-- "1" when a write may be trusted by whichever replica is promoted later:
-- the caller WAITs for `arg` replicas (a number; "w" counts as 1) and every
-- replica connected now is among them. WAIT 1 with two replicas may be
-- answered by the one that is not promoted.
local function confirmed_by_all(arg)
  local n = tonumber(arg) or (arg == 'w' and 1 or 0)
  if n <= 0 then return '0' end
  local cs = tonumber(string.match(redis.call('INFO', 'replication'), 'connected_slaves:(%d+)')) or 0
  if cs <= n then return '1' end
  return '0'
end

-- Was this server promoted from a replica since it started?
local function promoted()
  local off = string.match(redis.call('INFO', 'replication'), 'second_repl_offset:(%-?%d+)')
  return off ~= nil and off ~= '-1'
end

-- May this server grant the name without a quarantine? Yes when it granted
-- it before (same run_id), or when it was promoted from a replica and the
-- name's writes were all confirmed by replicas (WAIT) before they counted.
local function trusted(rec_run, rec_w, run)
  return rec_run == run or (rec_w == '1' and promoted())
end

-- The Redis time (ms) from which a name whose record says it was last
-- granted by server `rec_run` (with longest TTL `rec_max`, nil when the record
-- is missing) may be granted again with TTL `ttl` on this server.
--
-- The per-server marker `epoch` is "<run_id> <base_ms> <maxttl_ms>": since
-- `base`, this server is the one leasehold writes to. When the marker names
-- another server (or none), this one is new: restarted (from a snapshot, an
-- AOF, or empty), promoted from a replica, or used for the first time.
-- Holders confirmed by its predecessor may still run until one of their TTLs
-- after the predecessor's last write, which was no later than this server's
-- start; a promoted replica (or one flushed since its start) is trusted only
-- from now on. `write` false: compute only (status).
local function ready_at(epoch, run, now, uptime, rec_run, rec_max, ttl, write, rec_w)
  if rec_run and trusted(rec_run, rec_w, run) then return 0 end
  local m = redis.pcall('GET', epoch)
  if failed(m) then return nil end
  local mrun, mbase, mmax = nil, 0, 0
  if m then
    local a, b, c = string.match(m, '^(%S+) (%d+) (%d+)$')
    mrun, mbase, mmax = a, num(b), num(c)
  end
  if mrun ~= run then
    -- uptime_in_seconds is the difference of two whole Unix seconds (start
    -- and now, both rounded down): the start was no later than one second
    -- after now's whole seconds minus it. (now - uptime * 1000 could be up
    -- to a second before the start, ending the quarantine that much early.)
    mbase = (math.floor(now / 1000) - uptime + 1) * 1000
    local stats = redis.call('INFO', 'commandstats')
    local flushed = string.match(stats, 'cmdstat_flushall:calls=[1-9]')
      or string.match(stats, 'cmdstat_flushdb:calls=[1-9]')
    if flushed or promoted() then mbase = now end
    mmax = math.max(mmax, ttl)
    if write then
      redis.call('SET', epoch, run .. ' ' .. string.format('%.0f', mbase) .. ' ' .. mmax)
    end
  end
  -- A known name waits out its own longest TTL; a name this server has no
  -- record of waits out the longest any name used; and never less than
  -- ANNOUNCE_MS, the time holders take to reconnect and announce their own
  -- TTLs (renewal retries at most 500 ms apart, reconnects at most 1 s
  -- apart: see note_refused).
  local longest = math.max(ttl, rec_max or mmax, ANNOUNCE_MS)
  if write and longest > mmax then
    redis.call('SET', epoch, run .. ' ' .. string.format('%.0f', mbase) .. ' ' .. longest)
  end
  return mbase + longest
end

-- Raises the server's longest TTL to `ttl` (a name's longest TTL grew).
local function note_ttl(epoch, run, ttl)
  local m = redis.pcall('GET', epoch)
  if failed(m) or not m then return end
  local a, b, c = string.match(m, '^(%S+) (%d+) (%d+)$')
  if a == run and num(c) < ttl then redis.call('SET', epoch, a .. ' ' .. b .. ' ' .. ttl) end
end

-- A grant with TTL `ttl` of a name whose record says `rec_max`: the record's
-- longest TTL, and this server marker's (`epoch`; nil: none), cover it.
local function raise_maxttl(rec, epoch, run, ttl, rec_max)
  if ttl > num(rec_max) then
    redis.call('HSET', rec, 'maxttl', ttl)
    if epoch then note_ttl(epoch, run, ttl) end
  end
end

-- A holder with TTL `ttl` was refused a renewal on a server that did not
-- grant it (`rec_run` is not this server: it restarted, was wiped, or took
-- over from a master): that holder may run for up to its TTL. Make sure every
-- contender's quarantine covers it, even when their own TTLs are shorter
-- (after a wipe nothing else remembers it; holders renew at once after a
-- reconnect, so this arrives within a round trip of the restart).
local function note_refused(rec, epoch, ttl, rec_run)
  local run, now, _, uptime = server()
  if rec_run == run then return end
  ready_at(epoch, run, now, uptime, nil, nil, ttl, true)
  note_ttl(epoch, run, ttl)
  if redis.call('EXISTS', rec) == 1 and num(redis.call('HGET', rec, 'maxttl')) < ttl then
    redis.call('HSET', rec, 'maxttl', ttl)
  end
end

-- Is `s` a holder id, "<host>/<pid>/<32 hex digits>"? Only those are ever
-- removed from a queue or a semaphore: a member of another shape was not
-- written by leasehold (a key prefix shared with another application) and is
-- left alone (and never counted, granted or waited for).
local HOLDER_ID = '^[^/]*/%d+/' .. string.rep('%x', 32) .. '$'
local function is_holder_id(s)
  return type(s) == 'string' and string.match(s, HOLDER_ID) ~= nil
end

-- The first waiter in line whose place has not lapsed, with its
-- "<lapse ms> <ttl ms> <slots> <inbox> <value>" entry; waiters that stopped coming
-- (crashed) leave the line on the way. nil when nobody waits.
local function live_head(queue, qinfo, now)
  local i = 0
  while true do
    local h = redis.call('ZRANGE', queue, i, i)[1]
    if not h then return nil end
    if not is_holder_id(h) then
      i = i + 1
    else
      local info = redis.call('HGET', qinfo, h)
      if info and num(string.match(info, '^(%d+)')) > now then return h, info end
      redis.call('ZREM', queue, h)
      redis.call('HDEL', qinfo, h)
    end
  end
end

-- The first two live waiters in line (head and next, each nil when missing)
-- with their entries, as live_head finds them one after the other, but
-- read two at a time (one ZRANGE and one HMGET in the common case).
local function live_two(queue, qinfo, now)
  local out, start = {}, 0
  while #out < 2 do
    local ids = redis.call('ZRANGE', queue, start, start + 1 - #out)
    if #ids == 0 then break end
    local infos = redis.call('HMGET', qinfo, unpack(ids))
    for i, h in ipairs(ids) do
      if not is_holder_id(h) then
        start = start + 1
      elseif infos[i] and num(string.match(infos[i], '^(%d+)')) > now then
        out[#out + 1] = {h, infos[i]}
        start = start + 1
      else
        redis.call('ZREM', queue, h)
        redis.call('HDEL', qinfo, h)
      end
    end
  end
  local head, next = out[1] or {}, out[2] or {}
  return head[1], head[2], next[1], next[2]
end

-- The claim window of a grant: how long a waiter handed the lease on release
-- has to confirm it (clamp(ttl/10, 100 ms, 1 s), as the queue margin).
local function claim_ms(ttl)
  return math.min(math.max(math.floor(ttl / 10), 100), 1000)
end

-- A queue entry's parts: lapse (ms), ttl (ms), the waiter's inbox channel
-- ('-': none, use the name's channel), its value, and what it waits for:
-- slots 0 a lease, N a slot of a semaphore of N (a release hands on only
-- what the head waits for; a name used as both gets no grant across kinds).
local function entry(info)
  local lapse, ttl, slots, inbox, value = string.match(info or '', '^(%d+) (%d+) (%d+) (%S+) ?(.*)$')
  return num(lapse), num(ttl), inbox or '-', value or '', num(slots)
end

-- Publishes a message for waiter `inbox` (its own channel, so that no other
-- process hears it), or on the name's channel when it has none.
local function tell(inbox, channel, msg)
  if inbox ~= '-' and inbox ~= '' then channel = inbox end
  redis.call('PUBLISH', channel, msg)
end

-- Keeps (or takes) waiter `me`'s place in line with queue entry `text`
-- (lapsing at `until_ms`). The queue keys live a TTL beyond what this place
-- needs (`qu`, the record's field as the script read it): the places taken
-- within the next TTL — a busy line re-queues on every hand-off — need not
-- extend them again. False when a queue key is of a type we did not write.
local function join_line(queue, qinfo, rec, me, now_us, until_ms, ttl, text, qu)
  if failed(redis.pcall('ZADD', queue, 'NX', now_us, me)) then return false end
  if failed(redis.pcall('HSET', qinfo, me, text)) then
    -- No place without its entry (nor a queue key left without an expiry).
    redis.call('ZREM', queue, me)
    if redis.call('EXISTS', queue) == 0 then redis.call('HDEL', rec, 'qu') end
    return false
  end
  if until_ms > qu then
    local keep_until = until_ms + ttl
    redis.call('HSET', rec, 'qu', keep_until)
    redis.call('PEXPIREAT', queue, keep_until)
    redis.call('PEXPIREAT', qinfo, keep_until)
  end
  return true
end

-- After a release wrote the grant of its token `tok` to `head` (claim window
-- `claim` ms): the head leaves the line, and "granted <tok> <head> <claim>
-- <next>" goes to the head (`inbox`), to the next in line (`next_info`'s
-- inbox, when it is another: it comes when the grant lapses), and on the
-- name's channel when someone observes (`obs` > now).
local function hand_on(rec, queue, qinfo, head, inbox, next, next_info, tok, claim, channel, obs, now)
  redis.call('ZREM', queue, head)
  redis.call('HDEL', qinfo, head)
  if not next then redis.call('HDEL', rec, 'qu') end
  local msg = 'granted ' .. tok .. ' ' .. head .. ' ' .. claim .. ' ' .. (next or '')
  tell(inbox, channel, msg)
  if next_info then
    local _, _, next_inbox = entry(next_info)
    if next_inbox ~= inbox then tell(next_inbox, channel, msg) end
  end
  if inbox ~= '-' and obs > now then redis.call('PUBLISH', channel, msg) end
end
