-- register_worker.lua: record that a worker is alive (Store.register_worker).
--
-- KEYS[1]  workers hash (worker id -> JSON {queues, running, concurrency})
-- KEYS[2]  workers:seen zset (worker id by last registration, µs of store time)
-- ARGV[1]  key prefix; ARGV[2] worker id; ARGV[3] JSON; ARGV[4] visibility window (µs)
-- Returns  the registration instant (µs). Workers not seen within the window are forgotten here.
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
