-- dispatch.lua: decide a chunk of slots, each once, in order (Store.dispatch).
--
-- Store.dispatch sends its items in chunks (one call per chunk, all pipelined: one round trip for
-- the batch). Items travel as one flat JSON array because redis-py spends more time packing a
-- command's arguments than Redis spends deciding the slot, and one flat table is cheaper for Lua
-- than a table per item. The chunk runs atomically, so each item is atomic, and one lease check at
-- the top covers every item: nothing can change the lease, nor store time, in the middle of a
-- script.
--
-- This is the hot path of a large tick, so it is written for cost per slot: the run hash is
-- written with one literal HSET (no intermediate table), the job's progress with one HSET, the
-- reply is three strings instead of a table per item, and nothing that cannot change within a
-- chunk (queue registration, key prefixes) is redone per item. A QUEUED slot costs six commands
-- of its own (HMGET job, SET guard, HSET run, ZADD live:<job>, XADD ticket, HSET job) plus its
-- share of one ZADD live and one ZADD queued:<queue> per chunk.
--
-- Held runs (ARGV[6] = '1', when the store requires replica acknowledgements): a queued run is
-- created with `held` set and listed in `pending` instead of being put into its queue, so no
-- worker can claim it before the caller has seen the replicas acknowledge this call (WAIT);
-- publish.lua then queues it. Otherwise it goes into its queue at once, as before.
--
-- KEYS[1]  lease hash
-- ARGV[1]  key prefix; ARGV[2] lease token; ARGV[3] lease epoch; ARGV[4] history;
-- ARGV[5]  JSON array of strings, eleven per item: job, fingerprint, slot (µs), next_due (µs, ''
--          for none), queue, digest, overlap (skip|queue|allow), max_attempts, guard_ttl (ms),
--          run id (the slot id), skip reason ('' unless the leader superseded the slot: it is
--          then recorded skipped with this reason, whatever the job's active runs)
-- ARGV[6]  '1': hold the queued runs in `pending` (see above); '0': queue them now
-- Also     job:<job>, guard:<job>:<slot> (value: the decision instant, µs; expires after
--          guard_ttl), live, live:<job>, waiting:<job>, run:<id>, queued:<queue>, q:<queue>,
--          queues, seq, history:<job>, pending
--
-- After a rollback (_generation.lua), a slot after the watermark and at or before the rollback
-- instant (or the job's uncertain_until, see sync_jobs.lua) may have run in the lost window: its
-- guard is written and it is recorded 'uncertain' (history), never run.
-- Returns  fenced_reply (nothing written) or {'ok', decision instant (µs), statuses, earlier}:
--          statuses = each item's DispatchStatus value, in item order, separated by spaces;
--          earlier = for each 'duplicate' among them, in order, the instant (µs) of the first
--          decision (the guard's value), separated by spaces. Every other item was decided at
--          the decision instant. Per item, in the documented order: job/fingerprint, early,
--          guard, watermark.
-- Twice:   the guard written by the first run makes the second answer 'duplicate', carrying the
--          first decision's instant (the guard's value), so a repeated batch answers the same way.

local now = now_us()
if not lease_ok(KEYS[1], ARGV[2], ARGV[3], now) then
  return fenced_reply(KEYS[1])
end
local epoch, keep, at, hold = ARGV[3], tonumber(ARGV[4]), fmt(now), ARGV[6] == '1'
local pending = {}
local items = cjson.decode(ARGV[5])
local count = #items / 11
-- Creation numbers for the runs this chunk may create, reserved at once (gaps are harmless).
local seq = redis.call('INCRBY', P .. 'seq', count) - count
local statuses, earlier = {}, {}
local job_prefix, guard_prefix = P .. 'job:', P .. 'guard:'
-- Members for the shared sorted sets (live, and queued:<queue> per queue), added with one ZADD
-- per set after the loop instead of one per run: nothing in this script reads them back, and the
-- chunk is atomic, so no reader can tell the difference.
local live, queued_of = {}, {}
local function add_pair(members, score, member)
  members[#members + 1] = score
  members[#members + 1] = member
end
local function zadd_all(key, members)
  for first = 1, #members, 2000 do  -- bounded: unpack() puts every argument on Lua's stack
    redis.call('ZADD', key, unpack(members, first, math.min(first + 1999, #members)))
  end
end

-- The job's progress after deciding `slot`: watermark, next_due ('' deletes it) and, when a run
-- was created (`ran`), last_slot; one HSET on the common path.
local function progress(job_key, slot, next_due, ran)
  if next_due == '' then
    redis.call('HDEL', job_key, 'next_due')
    if ran then
      redis.call('HSET', job_key, 'watermark', slot, 'last_slot', slot)
    else
      redis.call('HSET', job_key, 'watermark', slot)
    end
  elseif ran then
    redis.call('HSET', job_key, 'watermark', slot, 'next_due', next_due, 'last_slot', slot)
  else
    redis.call('HSET', job_key, 'watermark', slot, 'next_due', next_due)
  end
end

-- Decide the item whose fields start at items[i + 1]; returns its status.
local function decide(i)
  local job, slot = items[i + 1], items[i + 3]
  local job_key = job_prefix .. job
  local state = redis.call('HMGET', job_key, 'fingerprint', 'watermark', 'paused',
                           'uncertain_until')
  if not state[1] or state[1] == '' or state[1] ~= items[i + 2] then
    return 'unknown-job'
  end
  local slot_us = tonumber(slot)
  if slot_us > now then
    return 'early'
  end
  local guard = guard_prefix .. job .. ':' .. slot
  if state[2] and slot_us <= tonumber(state[2]) then
    -- At or below the watermark: decided before (the guard says when) or never to run.
    local decided = redis.call('GET', guard)
    if decided then
      earlier[#earlier + 1] = decided
      return 'duplicate'
    end
    return 'stale'
  end
  -- Above the watermark the guard normally cannot exist; SET NX GET checks and writes at once.
  local decided = redis.call('SET', guard, at, 'NX', 'PX', items[i + 9], 'GET')
  if decided then
    earlier[#earlier + 1] = decided
    return 'duplicate'
  end
  local next_due = items[i + 4]
  if slot_us <= math.max(ROLLBACK_AT, tonumber(state[4] or '-1')) then
    local entry = {
      run_id = items[i + 10], job = job, slot = slot, manual = '0', queue = items[i + 5],
      digest = items[i + 6], epoch = epoch, max_attempts = items[i + 8], created_at = at,
      not_before = slot, attempt = '0',
    }
    push_history(job, history_entry(entry, 'uncertain', now, {error = UNCERTAIN_WHY}), keep)
    redis.call('HINCRBY', job_key, 'uncertain', 1)
    progress(job_key, slot, next_due, false)
    return 'uncertain'
  end
  if state[3] == '1' then
    progress(job_key, slot, next_due, false)
    return 'paused'
  end
  local queue, digest, overlap = items[i + 5], items[i + 6], items[i + 7]
  local max_attempts, run_id = items[i + 8], items[i + 10]
  -- overlap=allow never looks at the active runs (saves a call on the common path).
  local active = overlap ~= 'allow' and redis.call('ZCARD', P .. 'live:' .. job) > 0
  local status, reason = nil, items[i + 11]
  if reason ~= '' or (active and overlap == 'skip') then
    local run = {
      run_id = run_id, job = job, slot = slot, manual = '0', queue = queue, digest = digest,
      epoch = epoch, max_attempts = max_attempts, created_at = at, not_before = slot,
      attempt = '0',
    }
    if reason == '' then
      reason = overlap_reason(job)
    end
    push_history(job, history_entry(run, 'skipped', now, {error = reason}), keep)
    status = 'skipped'
  else
    -- The same fields create_run (_common.lua) writes, as one literal HSET.
    seq = seq + 1
    local seq_text = fmt(seq)
    local run_key = P .. 'run:' .. run_id
    if active and overlap == 'queue' then
      status = 'waiting'
      redis.call('HSET', run_key, 'run_id', run_id, 'job', job, 'slot', slot, 'manual', '0',
                 'queue', queue, 'digest', digest, 'epoch', epoch, 'max_attempts', max_attempts,
                 'created_at', at, 'not_before', slot, 'state', 'waiting', 'seq', seq_text,
                 'attempt', '0', 'rb', RB)
      redis.call('ZADD', P .. 'waiting:' .. job, seq_text, run_id)
    elseif hold then
      status = 'queued'
      redis.call('HSET', run_key, 'run_id', run_id, 'job', job, 'slot', slot, 'manual', '0',
                 'queue', queue, 'digest', digest, 'epoch', epoch, 'max_attempts', max_attempts,
                 'created_at', at, 'not_before', slot, 'state', 'queued', 'seq', seq_text,
                 'attempt', '0', 'rb', RB, 'held', '1')
      add_pair(pending, seq_text, run_id)
    else
      -- Not early, so ready at once (not_before = slot <= now): its ticket goes out now.
      status = 'queued'
      redis.call('HSET', run_key, 'run_id', run_id, 'job', job, 'slot', slot, 'manual', '0',
                 'queue', queue, 'digest', digest, 'epoch', epoch, 'max_attempts', max_attempts,
                 'created_at', at, 'not_before', slot, 'state', 'queued', 'seq', seq_text,
                 'attempt', '0', 'ticketed', '1', 'rb', RB)
      local queued = queued_of[queue]
      if queued == nil then
        ensure_queue(queue)
        queued = {}
        queued_of[queue] = queued
      end
      add_pair(queued, slot, queue_member(seq, run_id))
      redis.call('XADD', P .. 'q:' .. queue, '*', 'run', run_id)  -- as ticket_fields()
    end
    add_pair(live, seq_text, run_id)
    redis.call('ZADD', P .. 'live:' .. job, seq_text, run_id)
  end
  progress(job_key, slot, next_due, status ~= 'skipped')
  return status
end

for i = 0, #items - 1, 11 do
  statuses[#statuses + 1] = decide(i)
end
zadd_all(P .. 'live', live)
zadd_all(P .. 'pending', pending)
for queue, members in pairs(queued_of) do
  zadd_all(P .. 'queued:' .. queue, members)
end
return {'ok', at, table.concat(statuses, ' '), table.concat(earlier, ' ')}
