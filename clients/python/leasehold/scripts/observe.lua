-- observe.lua: ask for the name's events (acquired, released, proclaimed)
-- for the next ARGV[1] milliseconds. Without observers the scripts publish
-- only what waiters need. (Runs after prelude.lua.)
--
-- KEYS[1]  name record <prefix>{<name>}:lease
-- ARGV[1]  how long, in milliseconds
-- Returns 1, or an error for a key of another type.

local run, now = server()
local obs = redis.pcall('HGET', KEYS[1], 'obs')
if failed(obs) then return redis.error_reply('LEASEHOLD_FOREIGN ' .. KEYS[1] .. ' ' .. redis.call('TYPE', KEYS[1])['ok']) end
local until_ms = now + tonumber(ARGV[1])
if num(obs) < until_ms then redis.call('HSET', KEYS[1], 'obs', until_ms) end
return 1
