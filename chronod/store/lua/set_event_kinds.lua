-- set_event_kinds.lua: replace every job's event kinds (Store.set_event_kinds).
--
-- KEYS[1]  lease hash
-- KEYS[2]  event_kinds hash (job name -> JSON array of kinds)
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4] JSON object of job name
--          -> JSON array text of its kinds (jobs without kinds left out)
-- Returns  fenced_reply (nothing written) or {'ok'}.
-- Twice:   the second run replaces the hash with the very same contents.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return fenced_reply(KEYS[1])
end
replace_hash(KEYS[2], ARGV[4])
return {'ok'}
