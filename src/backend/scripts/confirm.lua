-- confirm.lua: quorum mode: record the token agreed on by a majority.
--
-- KEYS[1]  lease hash <prefix>{<name>}:lease
-- KEYS[2]  fence      <prefix>{<name>}:fence
-- ARGV[1]  holder id
-- ARGV[2]  token (decimal), the maximum of the tokens the majority issued
--
-- If we hold the lease here: its token becomes ARGV[2] and the fence is raised
-- to at least ARGV[2]. Returns 1 done, 0 not ours.
-- Writing the maximum back to a majority before the lease counts as held is
-- what keeps quorum tokens strictly increasing (docs/design.md).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if tonumber(ARGV[2]) > last then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
