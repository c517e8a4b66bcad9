-- acquire.lua: become leader if nobody holds an unexpired lease (Store.acquire_lease).
--
-- KEYS[1]  lease hash (token, epoch, node, expires)
-- KEYS[2]  epoch counter
-- ARGV[1]  key prefix; ARGV[2] node; ARGV[3] token; ARGV[4] ttl (µs); ARGV[5] floor: the highest
--          epoch the caller has seen ('' for none)
-- Returns  {'ok', epoch, node, expires} of the lease now held with this token, or {'held', epoch}
--          (someone else holds an unexpired lease of that epoch: the caller remembers it as its
--          floor).
-- Twice:   the second run finds its own token on the unexpired lease and returns that lease
--          unchanged (no second epoch). An expired lease is replaced even if the token matches,
--          with the next epoch: an expired lease is never revived.
--
-- The new epoch is above the counter and above the caller's floor, so even a store that lost the
-- counter's latest increments (a rollback nobody detected yet) never hands out an epoch a running
-- process has already seen. A missing counter (new or emptied store) starts at its clock floor.

local now = now_us()
local lease = hgetall(KEYS[1])
if lease and tonumber(lease.expires) > now then
  if lease.token == ARGV[3] then
    return {'ok', lease.epoch, lease.node, lease.expires}
  end
  return {'held', lease.epoch}
end
local counter = tonumber(redis.call('GET', KEYS[2]) or '')
if counter == nil then
  counter = epoch_floor(now)
end
local epoch = fmt(math.max(counter, tonumber(ARGV[5]) or 0) + 1)
redis.call('SET', KEYS[2], epoch)
local expires = fmt(now + tonumber(ARGV[4]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[3], 'epoch', epoch, 'node', ARGV[2], 'expires', expires)
return {'ok', epoch, ARGV[2], expires}
