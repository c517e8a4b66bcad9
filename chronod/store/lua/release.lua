-- release.lua: give up the lease now (Store.release_lease).
--
-- KEYS[1]  lease hash (the epoch counter is a separate key and keeps counting)
-- ARGV[1]  key prefix; ARGV[2] token; ARGV[3] epoch
-- Returns  1 if the lease was ours and is gone, 0 if it was not ours (nothing changed).
-- Twice:   the second run finds no lease of ours and changes nothing. Our own expired lease is
--          deleted as well: a successor necessarily has another token or epoch.

local v = redis.call('HMGET', KEYS[1], 'token', 'epoch')
if v[1] == ARGV[2] and v[2] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
