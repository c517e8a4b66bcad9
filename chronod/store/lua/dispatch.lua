-- dispatch.lua: decide a chunk of slots, each once, in order (Store.dispatch).
--
-- Store.dispatch sends its items in chunks (one call per chunk, all pipelined: one round trip for
-- the batch). Items travel as one JSON argument because redis-py spends more time packing a
-- command's arguments than Redis spends deciding the slot. The chunk runs atomically, so each item
-- is atomic, and one lease check at the top covers every item: nothing can change the lease, nor
-- store time, in the middle of a script.
--
-- KEYS[1]  lease hash
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4] history;
-- ARGV[5]  JSON array of items, each an array of strings: job, fingerprint, slot (µs), next_due
--          (µs, '' for none), queue, digest, overlap (skip|queue|allow), max_attempts,
--          guard_ttl (ms), run id (the slot id)
-- Also     job:<job>, guard:<job>:<slot> (value: the decision instant, µs; expires after
--          guard_ttl), live, live:<job>, waiting:<job>, run:<id>, queued:<queue>, q:<queue>,
--          queues, seq, history:<job>
-- Returns  {'fenced'} (nothing written) or {'ok', {status, run id or '', decision instant}...}
--          in item order; status is a DispatchStatus value. Per item, in the documented order:
--          job/fingerprint, early, guard, watermark.
-- Twice:   the guard written by the first run makes the second answer 'duplicate', carrying the
--          first decision's instant (the guard's value), so a repeated batch answers the same way.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return {'fenced'}
end
local epoch, keep, at = ARGV[3], tonumber(ARGV[4]), fmt(now)
local next_seq = 0

local function decide(item)
  local job, fingerprint, slot, next_due = item[1], item[2], item[3], item[4]
  local queue, digest, overlap, max_attempts = item[5], item[6], item[7], item[8]
  local guard_ms, run_id = item[9], item[10]
  local job_key = P .. 'job:' .. job
  local state = redis.call('HMGET', job_key, 'fingerprint', 'watermark', 'paused')
  if not state[1] or state[1] == '' or state[1] ~= fingerprint then
    return {'unknown-job', '', at}
  end
  if tonumber(slot) > now then
    return {'early', '', at}
  end
  local guard = P .. 'guard:' .. job .. ':' .. slot
  if state[2] and tonumber(slot) <= tonumber(state[2]) then
    -- At or below the watermark: decided before (the guard says when) or never to run.
    local decided = redis.call('GET', guard)
    if decided then
      return {'duplicate', run_id, decided}
    end
    return {'stale', '', at}
  end
  -- Above the watermark the guard normally cannot exist; SET NX GET checks and writes at once.
  local decided = redis.call('SET', guard, at, 'NX', 'PX', guard_ms, 'GET')
  if decided then
    return {'duplicate', run_id, decided}
  end
  local progress = {'watermark', slot}
  if next_due == '' then
    redis.call('HDEL', job_key, 'next_due')
  else
    progress[#progress + 1] = 'next_due'
    progress[#progress + 1] = next_due
  end
  local status
  if state[3] == '1' then
    status = 'paused'
  else
    local run = {
      run_id = run_id, job = job, slot = slot, manual = '0', queue = queue, digest = digest,
      epoch = epoch, max_attempts = max_attempts, created_at = at, not_before = slot,
    }
    -- overlap=allow never looks at the active runs (saves a call on the common path).
    local active = overlap ~= 'allow' and redis.call('ZCARD', P .. 'live:' .. job) > 0
    if active and overlap == 'skip' then
      run.attempt = '0'
      push_history(job, history_entry(run, 'skipped', now), keep)
      status = 'skipped'
    else
      run.state = (active and overlap == 'queue') and 'waiting' or 'queued'
      next_seq = next_seq + 1
      create_run(run, now, next_seq)
      progress[#progress + 1] = 'last_slot'
      progress[#progress + 1] = slot
      status = run.state
    end
  end
  redis.call('HSET', job_key, unpack(progress))
  return {status, status == 'paused' and '' or run_id, at}
end

local items = cjson.decode(ARGV[5])
-- Creation numbers for the runs this chunk may create, reserved at once (gaps are harmless).
next_seq = redis.call('INCRBY', P .. 'seq', #items) - #items
local results = {}
for _, item in ipairs(items) do
  results[#results + 1] = decide(item)
end
return {'ok', results}
