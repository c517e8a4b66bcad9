-- retire.lua: clear the fingerprint of every job not kept (Store.retire_jobs).
--
-- KEYS[1]  lease hash
-- KEYS[2]  jobs set
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4..] names to keep
-- Also     job:<name> of every job in the set
-- Returns  fenced_reply or {'ok', names retired by this call (sorted)}. State and history
--          are kept.
-- Also marks the latest rollback reconciled (sync_jobs.lua): the leader calls this once it has
-- synced every configured job.
-- Twice:   the second run finds those fingerprints already empty and retires nothing more.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return fenced_reply(KEYS[1])
end
local keep = {}
for i = 4, #ARGV do
  keep[ARGV[i]] = true
end
local retired = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = P .. 'job:' .. name
  local fingerprint = redis.call('HGET', key, 'fingerprint')
  if not keep[name] and fingerprint and fingerprint ~= '' then
    redis.call('HSET', key, 'fingerprint', '')
    retired[#retired + 1] = name
  end
end
local rb = redis.call('HGET', GEN, 'rb')
if rb then
  redis.call('HSET', GEN, 'rb_reconciled', rb)
end
table.sort(retired)
return {'ok', retired}
