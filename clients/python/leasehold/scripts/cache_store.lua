-- cache_store.lua: store a freshly fetched value, or announce a failed
-- refresh, only while we are the refresher.
--
-- KEYS[1]  value hash      <prefix>{cache#<name>}:value
-- KEYS[2]  refresher lease <prefix>{cache#<name>}:lease (a name record, prelude.lua)
-- KEYS[3]  failure marker  <prefix>{cache#<name>}:failed
-- ARGV[1]  refresher's holder id
-- ARGV[2]  value (with ARGV[3] = "0": the refresh failed, store nothing)
-- ARGV[3]  lifetime in milliseconds (1 .. 365 days)
-- ARGV[4]  event channel <prefix>{cache#<name>}:events
-- ARGV[5]  the failure: "budget <limit> <reset>" or "fetch <message>"
--          (leasehold's own words, never part of a value)
-- ARGV[6]  how long to keep the failure (ms; 0: not at all)
--
-- Publishes "stored 0" or "failed 0 <failure>" so that waiters wake.
-- Returns 1 done, 0 not the refresher any more (its lease was lost: a stale
-- refresher cannot overwrite a newer value). A lifetime out of range is an
-- error before anything is written: a value never lives without a TTL.

local r = redis.call('HMGET', KEYS[2], 'holder', 'exp')
local t = redis.call('TIME')
if r[1] ~= ARGV[1] or (tonumber(r[2]) or 0) <= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
  return 0
end
local life = tonumber(ARGV[3])
if life > 0 then
  if life > 31536000000 then
    return redis.error_reply('ERR leasehold: cache lifetime over 365 days')
  end
  redis.call('HSET', KEYS[1], 'value', ARGV[2], 'life', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], life)
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[4], 'stored 0')
else
  local keep = tonumber(ARGV[6])
  if keep > 0 then
    redis.call('SET', KEYS[3], ARGV[5], 'PX', keep)
  end
  redis.call('PUBLISH', ARGV[4], 'failed 0 ' .. ARGV[5])
end
return 1
