-- announce.lua: record that a chronod process is alive, or stopped cleanly (Store.announce).
--
-- KEYS[1]  presence hash (member -> JSON {role, stopped})
-- KEYS[2]  presence:seen zset (member by last announcement, µs of store time)
-- ARGV[1]  key prefix; ARGV[2] member; ARGV[3] JSON; ARGV[4] visibility window (µs)
-- Returns  the announcement instant (µs). Members not announced within the window are forgotten.
-- Twice:   the second run overwrites the same entry with a slightly later instant.

local now = now_us()
local horizon = fmt(now - tonumber(ARGV[4]))
for _, gone in ipairs(redis.call('ZRANGE', KEYS[2], '-inf', '(' .. horizon, 'BYSCORE')) do
  redis.call('HDEL', KEYS[1], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. horizon)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], fmt(now), ARGV[2])
return fmt(now)
