-- acquire.lua: become leader if nobody holds an unexpired lease (Store.acquire_lease).
--
-- KEYS[1]  lease hash (token, epoch, node, expires)
-- KEYS[2]  epoch counter
-- ARGV[1]  key prefix; ARGV[2] node; ARGV[3] token; ARGV[4] ttl (µs)
-- Returns  {epoch, node, expires} of the lease now held with this token, or false (someone else
--          holds an unexpired lease).
-- Twice:   the second run finds its own token on the unexpired lease and returns that lease
--          unchanged (no second epoch). An expired lease is replaced even if the token matches,
--          with the next epoch: an expired lease is never revived.

local now = now_us()
local lease = hgetall(KEYS[1])
if lease and tonumber(lease.expires) > now then
  if lease.token == ARGV[3] then
    return {lease.epoch, lease.node, lease.expires}
  end
  return false
end
local epoch = fmt(redis.call('INCR', KEYS[2]))
local expires = fmt(now + tonumber(ARGV[4]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[3], 'epoch', epoch, 'node', ARGV[2], 'expires', expires)
return {epoch, ARGV[2], expires}
