-- renew.lua: extend the current, unexpired lease (Store.renew_lease).
--
-- KEYS[1]  lease hash
-- ARGV[1]  key prefix; ARGV[2] token; ARGV[3] epoch; ARGV[4] ttl (µs)
-- Returns  {'ok', new expiry (µs)} or {'refused', epoch, node, expires} of the lease the store
--          holds (false for each when it holds none): not the current lease, or expired (never
--          revived).
-- Twice:   the second run extends again from its own "now": the same lease, a slightly later
--          expiry, which is what a renewal asks for.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  local v = redis.call('HMGET', KEYS[1], 'epoch', 'node', 'expires')
  return {'refused', v[1], v[2], v[3]}
end
local expires = fmt(now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'expires', expires)
return {'ok', expires}
