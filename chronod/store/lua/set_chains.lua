-- set_chains.lua: replace every chain link (Store.set_chains; "Chains" in chronod/store/base.py).
--
-- KEYS[1]  lease hash
-- KEYS[2]  chains hash (upstream job name -> JSON array of its links: job, when, queue, digest,
--          overlap, max_attempts, epoch)
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4] JSON object of upstream
--          job name -> JSON array text of its links
-- Returns  fenced_reply (nothing written) or {'ok'}.
-- Twice:   the second run replaces the hash with the very same contents.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return fenced_reply(KEYS[1])
end
replace_hash(KEYS[2], ARGV[4])
return {'ok'}
