-- leader.lua: the current unexpired lease holder (Store.leader). Read-only.
--
-- KEYS[1]  lease hash
-- ARGV[1]  key prefix
-- Returns  {node, epoch, expires} or false.
-- Twice:   reads only.

local lease = hgetall(KEYS[1])
if lease and tonumber(lease.expires) > now_us() then
  return {lease.node, lease.epoch, lease.expires}
end
return false
