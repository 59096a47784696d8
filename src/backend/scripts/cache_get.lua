-- cache_get.lua: read a cached value and how long it stays valid.
--
-- KEYS[1]  value hash <prefix>{cache:<name>}:value   field value; TTL = its lifetime
--
-- Returns {value, pttl_ms}, or {} when nothing valid is cached.

local v = redis.call('HGET', KEYS[1], 'value')
if not v then return {} end
return {v, redis.call('PTTL', KEYS[1])}
