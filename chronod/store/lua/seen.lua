-- seen.lua: the members of a roster (mark_seen.lua) recorded within the window, newest first
-- (Store.workers, Store.presences). Read-only.
--
-- KEYS[1]  the roster's hash
-- KEYS[2]  the roster's seen zset
-- ARGV[1]  key prefix; ARGV[2] visibility window (µs)
-- Returns  {member, seen (µs), JSON, ...}
-- Twice:   reads only.

local horizon = fmt(now_us() - tonumber(ARGV[2]))
local seen = redis.call('ZRANGE', KEYS[2], '+inf', horizon, 'BYSCORE', 'REV', 'WITHSCORES')
local reply = {}
for i = 1, #seen, 2 do
  local info = redis.call('HGET', KEYS[1], seen[i])
  if info then
    reply[#reply + 1] = seen[i]
    reply[#reply + 1] = seen[i + 1]
    reply[#reply + 1] = info
  end
end
return reply
