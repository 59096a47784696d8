-- cache_store.lua: store a freshly fetched value, only while we are the refresher.
--
-- KEYS[1]  value hash <prefix>{cache:<name>}:value
-- KEYS[2]  refresher lease <prefix>{cache:<name>}:lease
-- ARGV[1]  refresher's holder id
-- ARGV[2]  value ("" with ARGV[3] = "0" means: the fetch failed, store nothing)
-- ARGV[3]  lifetime in milliseconds
-- ARGV[4]  event channel <prefix>{cache:<name>}:events
-- ARGV[5]  failure message (when the fetch failed)
--
-- Publishes "stored 0" or "failed 0 <message>" so that waiters wake.
-- Returns 1 done, 0 not the refresher any more (its lease was lost: a stale
-- refresher cannot overwrite a newer value).

if redis.call('HGET', KEYS[2], 'holder') ~= ARGV[1] then return 0 end
local life = tonumber(ARGV[3])
if life > 0 then
  redis.call('HSET', KEYS[1], 'value', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], life)
  redis.call('PUBLISH', ARGV[4], 'stored 0')
else
  redis.call('PUBLISH', ARGV[4], 'failed 0 ' .. ARGV[5])
end
return 1
