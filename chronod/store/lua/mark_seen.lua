-- mark_seen.lua: record that a member is alive, in one of the rosters of members seen lately:
-- workers (Store.register_worker) or chronod processes (Store.announce).
--
-- KEYS[1]  the roster's hash (member -> JSON: a worker's {queues, running, concurrency}, a
--          process's {role, stopped})
-- KEYS[2]  the roster's seen zset (member by its last record, µs of store time)
-- ARGV[1]  key prefix; ARGV[2] member; ARGV[3] JSON; ARGV[4] visibility window (µs)
-- Returns  the record's instant (µs). Members not recorded within the window are forgotten here.
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
