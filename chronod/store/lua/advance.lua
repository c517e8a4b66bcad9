-- advance.lua: record slots the leader will not run (Store.advance).
--
-- KEYS[1]  lease hash
-- KEYS[2]  job:<job> hash
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4] job; ARGV[5] fingerprint;
-- ARGV[6]  missed_count; ARGV[7] next_due (µs, '' for none); ARGV[8] history;
-- ARGV[9+2i], ARGV[10+2i]  slot (µs) and slot id of each missed slot, oldest first
-- Also     history:<job>, live:<job>; event_kinds and outbox* (an event per recorded slot whose
--          outcome the job's event kinds name, as end_run appends one)
-- Returns  fenced_reply (nothing written) or {'ok', job_reply}; a fingerprint mismatch changes
--          nothing and returns the stored state.
-- After a rollback, a slot at or before the rollback instant (or the job's uncertain_until) is
-- recorded 'uncertain' instead of 'missed': it may have run in the window the store lost.
-- Twice:   the first run moved the watermark to the newest missed slot, so the second records no
--          entry, and the counter grows only when this call recorded at least one slot (or named
--          none): a repeat neither duplicates entries nor counts twice.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return fenced_reply(KEYS[1])
end
local job = ARGV[4]
local state = redis.call('HMGET', KEYS[2], 'fingerprint', 'watermark', 'uncertain_until')
if not state[1] or state[1] == '' or state[1] ~= ARGV[5] then
  return {'ok', job_reply(job)}
end
local watermark = state[2] and tonumber(state[2]) or nil
local keep = tonumber(ARGV[8])
local recorded, uncertain = 0, 0
local lost_until = math.max(ROLLBACK_AT, tonumber(state[3] or '-1'))
for i = 9, #ARGV, 2 do
  local slot = tonumber(ARGV[i])
  if watermark == nil or slot > watermark then
    local entry = {
      run_id = ARGV[i + 1], job = job, slot = ARGV[i], manual = '0', queue = '', digest = '',
      epoch = ARGV[3], attempt = '0', max_attempts = '0', created_at = fmt(now),
      not_before = ARGV[i],
    }
    local recorded_entry
    if slot <= lost_until then
      recorded_entry = history_entry(entry, 'uncertain', now, {error = UNCERTAIN_WHY})
      uncertain = uncertain + 1
    else
      recorded_entry = history_entry(entry, 'missed', now)
    end
    push_history(job, recorded_entry, keep)
    append_event(job, recorded_entry, nil, now)
    watermark = slot
    recorded = recorded + 1
  end
end
if recorded > 0 or #ARGV < 9 then
  redis.call('HINCRBY', KEYS[2], 'missed', fmt(math.max(tonumber(ARGV[6]) - uncertain, 0)))
end
if uncertain > 0 then
  redis.call('HINCRBY', KEYS[2], 'uncertain', uncertain)
end
if watermark ~= nil then
  redis.call('HSET', KEYS[2], 'watermark', fmt(watermark))
end
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[2], 'next_due')
else
  redis.call('HSET', KEYS[2], 'next_due', ARGV[7])
end
return {'ok', job_reply(job)}
