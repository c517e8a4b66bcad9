-- sync_jobs.lua: reconcile stored job state with the loaded config (Store.sync_jobs).
--
-- A leader loads every job at once (100,000 of them in a large installation), so the jobs travel
-- as one JSON argument and the states come back as one JSON string: packing and parsing hundreds
-- of thousands of separate arguments and reply elements cost the client seconds.
--
-- KEYS[1]  lease hash
-- KEYS[2]  jobs set
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4] loaded_at (µs)
-- ARGV[5]  JSON array of strings, three per job: name, fingerprint, next_due (µs, '' for none)
-- Also     job:<name>, live:<name> (for `active`)
-- Returns  fenced_reply (nothing written) or {'ok', JSON array of [name, active, {field: value}]
--          (the job hash), in input order}.
-- After a rollback that no leader has reconciled yet (retire.lua marks it reconciled once a
-- leader has synced every job), a job without state had it lost: its watermark becomes the
-- newest instant a witness saw the store at (rb_seen_at) and uncertain_until the load instant,
-- so the slots of the lost window are each recorded 'uncertain' once (never run, never silently
-- dropped) and nothing after it runs early.
-- Twice:   the second run finds every fingerprint equal and changes nothing (same states).

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return fenced_reply(KEYS[1])
end
local loaded = tonumber(ARGV[4])
local jobs = cjson.decode(ARGV[5])
local gen = redis.call('HMGET', GEN, 'rb', 'rb_reconciled', 'rb_seen_at')
local lost_since = nil
if gen[1] and gen[1] ~= gen[2] and gen[3] and tonumber(gen[3]) < loaded then
  lost_since = tonumber(gen[3])
end
local states = {}
for i = 1, #jobs, 3 do
  local name, fingerprint, next_due = jobs[i], jobs[i + 1], jobs[i + 2]
  local key = P .. 'job:' .. name
  local state = redis.call('HMGET', key, 'fingerprint', 'watermark')
  if redis.call('EXISTS', key) == 0 or state[1] ~= fingerprint then
    -- New, edited, retired and re-added, or created by a pause: the definition is new from
    -- `loaded` on, so nothing at or before the load instant ever runs ("edits never fire early").
    local watermark = loaded
    if state[2] and tonumber(state[2]) > loaded then
      watermark = tonumber(state[2])
    end
    if lost_since and redis.call('EXISTS', key) == 0 then
      watermark = lost_since
      redis.call('HSET', key, 'uncertain_until', fmt(loaded))
    end
    redis.call('HSET', key, 'fingerprint', fingerprint, 'watermark', fmt(watermark))
    if redis.call('HEXISTS', key, 'paused') == 0 then
      redis.call('HSET', key, 'paused', '0', 'missed', '0')
    end
    if next_due == '' then
      redis.call('HDEL', key, 'next_due')
    else
      redis.call('HSET', key, 'next_due', next_due)
    end
    redis.call('SADD', KEYS[2], name)
  end
  states[#states + 1] = job_json(name)
end
return {'ok', cjson.encode(states)}
