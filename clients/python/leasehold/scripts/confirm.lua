-- confirm.lua: quorum mode: record the token agreed on by a majority.
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- ARGV[1]  holder id
-- ARGV[2]  token (decimal), the maximum of the tokens the majority issued
--
-- If we hold the lease here, its token (which is also the name's last token)
-- is raised to ARGV[2]. Returns 1 done, 0 not ours.
-- Writing the maximum back to a majority before the lease counts as held is
-- what keeps quorum tokens strictly increasing (docs/design.md).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local r = redis.call('HMGET', KEYS[1], 'holder', 'token')
if r[1] ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > (tonumber(r[2]) or 0) then redis.call('HSET', KEYS[1], 'token', ARGV[2]) end
return 1
