-- heartbeat.lua: extend an attempt lease (Store.heartbeat).
--
-- KEYS[1]  run:<id> hash
-- KEYS[2]  leases zset
-- ARGV[1]  key prefix; ARGV[2] run id; ARGV[3] token; ARGV[4] ttl (µs)
-- Returns  1 extended, 0 the token is not the running attempt's (the worker must stop).
-- Twice:   extends again from a later "now": the same answer.

local now = now_us()
local v = redis.call('HMGET', KEYS[1], 'state', 'token')
if v[1] ~= 'running' or v[2] ~= ARGV[3] then
  return 0
end
local expires = fmt(now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'lease_expires', expires)
redis.call('ZADD', KEYS[2], expires, ARGV[2])
return 1
