-- _common.lua: helpers shared by every chronod script. RedisStore prepends this file to each
-- script before registering it, so one definition serves all (Redis has no include).
--
-- Conventions
--   ARGV[1] is always the key prefix '{namespace}:'. Fixed keys are passed in KEYS; keys of
--     entities found while running (the run of a token, a job's waiting successor, ...) are built
--     from the prefix. The layout is documented in chronod/store/keys.py; every key shares the
--     hash tag, so the script may touch all of them in Redis Cluster.
--   Instants are integer microseconds since the Unix epoch, written as decimal strings. A Lua
--     number is a double (exact for microseconds until the year 2255), but tostring() and cjson
--     print 14 significant digits, so every number is written with fmt() ('%d').
--   redis.call('TIME') is the only clock. Redis 7 replicates a script's effects, not the script,
--     so writes that depend on TIME are replicated and persisted as they happened.
--   Records are flat hashes of strings (live runs, jobs) or JSON objects of strings (history).
--   Every script also runs the generation prologue (_generation.lua): RB and ROLLBACK_AT below are
--     set there before the script's own code runs.

local P = ARGV[1]
local GROUP = 'workers'
-- The number of rollbacks the store has detected (a string): stored on every run created, so a
-- run created before the latest rollback is known to be suspect (see is_suspect).
local RB = '0'
-- Store time (µs) of the latest rollback detection, -1 for none: a slot at or before it and after
-- its job's watermark falls in the window the store lost, and is recorded 'uncertain'.
local ROLLBACK_AT = -1
-- The most events the outbox holds (Store.outbox_limit): the generation prologue sets it from the
-- caller's trailing argument; beyond it append_event drops the oldest and counts them.
local OUTBOX_LIMIT = 10000
-- The most of a run's output an event carries (records.EVENT_OUTPUT), in bytes.
local EVENT_OUTPUT = 4096
-- Outcomes after which a success is 'recovered' (records.UNSUCCESSFUL).
local UNSUCCESSFUL = {
  ['failed'] = true, ['timed-out'] = true, ['lost'] = true, ['config-mismatch'] = true,
  ['quarantined'] = true, ['uncertain'] = true,
}

-- The fields of a run copied into its history entries.
local RUN_FIELDS = {
  'run_id', 'job', 'slot', 'manual', 'queue', 'digest', 'epoch', 'attempt', 'max_attempts',
  'created_at', 'not_before', 'started_at', 'worker',
}
-- The error text of a run or slot recorded 'uncertain'.
local UNCERTAIN_WHY = 'the store went back to an older state (rollback): this may or may not ' ..
  'have run in the lost window, and is never run again'

local function fmt(n)
  return string.format('%d', n)
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- HGETALL as a Lua table, or nil when the key does not exist.
local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil
  end
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

-- The lease at `key` is this token and epoch and has not expired at store time `now`.
local function lease_ok(key, token, epoch, now)
  local v = redis.call('HMGET', key, 'token', 'epoch', 'expires')
  return v[1] == token and v[2] == epoch and v[3] ~= false and tonumber(v[3]) > now
end

-- {name, active, HGETALL of the job hash}: what the Python side decodes into a JobState.
local function job_reply(name)
  return {name, redis.call('ZCARD', P .. 'live:' .. name), redis.call('HGETALL', P .. 'job:' .. name)}
end

-- The same as a table for cjson: {name, active, {field = value}} (an empty hash encodes as {}).
local function job_json(name)
  return {name, redis.call('ZCARD', P .. 'live:' .. name), hgetall(P .. 'job:' .. name) or {}}
end

-- A job hash (empty fingerprint) for a job that has none yet, registered in the jobs set.
local function ensure_job(name)
  local key = P .. 'job:' .. name
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'fingerprint', '', 'paused', '0', 'missed', '0')
    redis.call('SADD', P .. 'jobs', name)
  end
end

-- Member of queued:<queue>: runs with equal not_before sort by creation (the zero-padded seq).
local function queue_member(seq, run_id)
  return string.format('%016d', tonumber(seq)) .. ' ' .. run_id
end

-- Queues this script call has already registered (the queues set, the stream and its group).
local known_queues = {}

-- Register `queue` once per call: in the queues set, and its stream with the consumer group
-- (created from id 0, so the group sees the very first ticket).
local function ensure_queue(queue)
  if known_queues[queue] then
    return
  end
  local stream = P .. 'q:' .. queue
  redis.call('SADD', P .. 'queues', queue)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
  known_queues[queue] = true
end

-- Append a ticket ("a run became ready in this queue") to the queue's stream.
local function add_ticket(queue, fields)
  ensure_queue(queue)
  redis.call('XADD', P .. 'q:' .. queue, '*', unpack(fields))
end

-- A ticket only wakes a worker of its queue (claim.lua reads queued:<queue>, never the ticket's
-- fields), so it names its run for people reading the stream and nothing more: every field
-- would be written once per dispatched slot.
local function ticket_fields(run)
  return {'run', run.run_id}
end

local function is_ready(run, now)
  return tonumber(run.not_before) <= now
end

-- Put a queued run into its queue. Ready now: it gets a ticket at once. Ready later (a retry):
-- it waits in delayed:<queue> until promote.lua gives it its ticket. Either way it is claimable
-- as soon as not_before <= now (claim.lua reads queued:<queue>, not tickets). The caller records
-- `ticketed` on the run hash (see make_ready).
local function enqueue(run, now)
  local queue = run.queue
  ensure_queue(queue)
  redis.call('ZADD', P .. 'queued:' .. queue, run.not_before, queue_member(run.seq, run.run_id))
  if is_ready(run, now) then
    add_ticket(queue, ticket_fields(run))
  else
    redis.call('ZADD', P .. 'delayed:' .. queue, run.not_before, run.run_id)
  end
end

-- An existing run hash whose state is now 'queued' goes (back) into its queue.
local function make_ready(run, now)
  enqueue(run, now)
  local key = P .. 'run:' .. run.run_id
  if is_ready(run, now) then
    redis.call('HSET', key, 'ticketed', '1')
  else
    redis.call('HDEL', key, 'ticketed')
  end
end

-- Create a live run (state 'queued' or 'waiting') from `run` (a table of strings). `seq`, its
-- creation number, is taken from the seq counter unless the caller reserved one.
local function create_run(run, now, seq)
  seq = seq or redis.call('INCR', P .. 'seq')
  run.seq = fmt(seq)
  run.attempt = '0'
  run.rb = RB
  if run.state == 'queued' and is_ready(run, now) then
    run.ticketed = '1'
  end
  local flat = {}
  for field, value in pairs(run) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  redis.call('HSET', P .. 'run:' .. run.run_id, unpack(flat))
  redis.call('ZADD', P .. 'live', seq, run.run_id)
  redis.call('ZADD', P .. 'live:' .. run.job, seq, run.run_id)
  if run.state == 'waiting' then
    redis.call('ZADD', P .. 'waiting:' .. run.job, seq, run.run_id)
  else
    enqueue(run, now)
  end
end

-- Newest first, at most `keep` entries (keep = 0 keeps none).
local function push_history(job, entry, keep)
  local key = P .. 'history:' .. job
  if keep <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('LPUSH', key, cjson.encode(entry))
  redis.call('LTRIM', key, 0, keep - 1)
end

-- A history entry for `run` (its RUN_FIELDS) with outcome `state`, plus `extra` fields.
local function history_entry(run, state, now, extra)
  local entry = {}
  for _, field in ipairs(RUN_FIELDS) do
    if run[field] ~= nil then
      entry[field] = run[field]
    end
  end
  entry.state = state
  entry.finished_at = fmt(now)
  for field, value in pairs(extra or {}) do
    entry[field] = value
  end
  return entry
end

-- The job's oldest waiting run becomes queued (its not_before is already past: ready at once).
local function release_waiting(job, now)
  local waiting = P .. 'waiting:' .. job
  while true do
    local run_id = redis.call('ZRANGE', waiting, 0, 0)[1]
    if not run_id then
      return
    end
    redis.call('ZREM', waiting, run_id)
    local run = hgetall(P .. 'run:' .. run_id)
    if run then
      redis.call('HSET', P .. 'run:' .. run_id, 'state', 'queued')
      make_ready(run, now)
      return
    end
  end
end

-- At most the last EVENT_OUTPUT bytes of `text`, not starting inside a UTF-8 character.
local function event_tail(text)
  if #text <= EVENT_OUTPUT then
    return text
  end
  local start = #text - EVENT_OUTPUT + 1
  while start <= #text do
    local byte = string.byte(text, start)
    if byte < 128 or byte >= 192 then
      break
    end
    start = start + 1
  end
  return string.sub(text, start)
end

-- The event (the outbox: "Outbox" in chronod/store/base.py) that the history `entry` of a run end
-- makes, appended when the job's event kinds want one; `previous` is the job's last outcome
-- before this one. `started` (an attempt's start: `entry` is then the running run, state
-- 'running') names the kind outright. The oldest events beyond OUTBOX_LIMIT are dropped and
-- counted.
local function append_event(job, entry, previous, now, started)
  local wanted = redis.call('HGET', P .. 'event_kinds', job)
  if not wanted then
    return
  end
  local kinds = {}
  for _, kind in ipairs(cjson.decode(wanted)) do
    kinds[kind] = true
  end
  local kind = nil
  if started then
    kind = kinds['started'] and 'started' or nil
  elseif entry.state == 'succeeded' and UNSUCCESSFUL[previous or ''] and kinds['recovered'] then
    kind = 'recovered'
  elseif kinds[entry.state] then
    kind = entry.state
  end
  if not kind then
    return
  end
  local id = tostring(entry.run_id) .. '#' .. tostring(entry.attempt or '0') .. ':' .. kind
  if redis.call('ZSCORE', P .. 'outbox', id) then
    return
  end
  local carried = {}
  for field, value in pairs(entry) do
    carried[field] = value
  end
  carried.output = event_tail(entry.output or '')
  local seq = redis.call('HINCRBY', P .. 'outbox:info', 'seq', 1)
  redis.call('HSET', P .. 'outbox:events', id, cjson.encode(
    {kind = kind, entry = carried, created = fmt(now), attempts = 0, done = '[]'}))
  redis.call('ZADD', P .. 'outbox', seq, id)
  redis.call('ZADD', P .. 'outbox:due', now, string.format('%016d %s', seq, id))
  local excess = redis.call('ZCARD', P .. 'outbox') - math.max(OUTBOX_LIMIT, 0)
  if excess > 0 then
    local oldest = redis.call('ZRANGE', P .. 'outbox', 0, excess - 1, 'WITHSCORES')
    for i = 1, #oldest, 2 do
      redis.call('HDEL', P .. 'outbox:events', oldest[i])
      redis.call('ZREM', P .. 'outbox', oldest[i])
      redis.call('ZREM', P .. 'outbox:due',
                 string.format('%016d %s', tonumber(oldest[i + 1]), oldest[i]))
    end
    redis.call('HINCRBY', P .. 'outbox:info', 'dropped', excess)
  end
end

-- A job's outcome fields after an attempt ended with history `entry` (a run's end, or the end of
-- an execution by another system: end_external.lua), and the event it causes (append_event
-- compares with the job's previous outcome, so this reads it before overwriting it).
local function record_outcome(job, entry, now)
  ensure_job(job)
  local job_key = P .. 'job:' .. job
  append_event(job, entry, redis.call('HGET', job_key, 'last_outcome'), now)
  redis.call('HSET', job_key, 'last_outcome', entry.state, 'last_outcome_at', fmt(now))
  if entry.state == 'succeeded' then
    redis.call('HSET', job_key, 'last_success_at', fmt(now))
  end
end

-- Why a slot is skipped for overlap (chronod.store.base.overlap_reason): the job's newest live run.
local function overlap_reason(job)
  local run_id = redis.call('ZRANGE', P .. 'live:' .. job, -1, -1)[1]
  local state = run_id and redis.call('HGET', P .. 'run:' .. run_id, 'state')
  if not state then
    return 'overlap = skip'
  end
  return 'previous run ' .. run_id .. ' still ' .. state .. ' (overlap = skip)'
end

-- The final outcomes of an upstream run that start the runs of each `when`
-- (records.CHAIN_OUTCOMES).
local CHAIN_OUTCOMES = {
  ['succeeded'] = {['succeeded'] = true},
  ['failed'] = {['failed'] = true, ['timed-out'] = true, ['lost'] = true},
  ['finished'] = {['succeeded'] = true, ['failed'] = true, ['timed-out'] = true, ['lost'] = true},
}

-- One downstream run after the run end `entry` ("Chains" in chronod/store/base.py): `link` is a
-- stored link (set_chains.lua), `run_id` the chained run id (records.chained_run_id).
local function start_chained(link, run_id, entry, now, keep)
  local job = link.job
  if redis.call('HGET', P .. 'job:' .. job, 'paused') == '1'
      or redis.call('EXISTS', P .. 'run:' .. run_id) == 1 then
    return
  end
  local run = {
    run_id = run_id, job = job, slot = entry.slot, manual = '0', queue = link.queue,
    digest = link.digest, epoch = fmt(link.epoch), max_attempts = fmt(link.max_attempts),
    created_at = fmt(now), not_before = fmt(now),
  }
  local active = redis.call('ZCARD', P .. 'live:' .. job) > 0
  if active and link.overlap == 'skip' then
    run.attempt = '0'
    push_history(job, history_entry(run, 'skipped', now, {error = overlap_reason(job)}), keep)
    return
  end
  run.state = (active and link.overlap == 'queue') and 'waiting' or 'queued'
  create_run(run, now)
end

-- The downstream runs the run end `entry` (a history entry) starts, decided in the script that
-- records the end, so that no process can die between the two.
local function follow_chains(entry, now, keep)
  if type(entry.job) ~= 'string' or type(entry.run_id) ~= 'string' then
    return  -- a malformed run's end (quarantined): it starts nothing
  end
  local text = redis.call('HGET', P .. 'chains', entry.job)
  if not text then
    return
  end
  local suffix = string.sub(entry.run_id, #entry.job + 2)
  for _, link in ipairs(cjson.decode(text)) do
    local wanted = CHAIN_OUTCOMES[link.when]
    if wanted and wanted[entry.state] then
      start_chained(link, link.job .. '@' .. suffix .. '~after~' .. entry.job, entry, now, keep)
    end
  end
end

-- A run ends with a terminal `outcome`: history entry, the job's outcome fields, out of the live
-- set, the job's oldest waiting run released, its event appended (append_event), and the runs
-- its chains start (follow_chains).
local function end_run(run, outcome, now, keep, extra)
  local entry = history_entry(run, outcome, now, extra)
  push_history(run.job, entry, keep)
  record_outcome(run.job, entry, now)
  redis.call('DEL', P .. 'run:' .. run.run_id)
  redis.call('ZREM', P .. 'live', run.run_id)
  redis.call('ZREM', P .. 'live:' .. run.job, run.run_id)
  redis.call('ZREM', P .. 'leases', run.run_id)
  release_waiting(run.job, now)
  follow_chains(entry, now, keep)
end

-- A run created before the store's latest rollback: it may have run (or be running) in the window
-- the store lost, so it is never started again (its live worker, if any, may still finish it).
local function is_suspect(run)
  return tonumber(run.rb or '0') < tonumber(RB)
end

-- Back to 'queued' after an attempt (reap, hand back, retry): the attempt's fields are cleared.
local function requeue(run, not_before, now)
  local key = P .. 'run:' .. run.run_id
  redis.call('HSET', key, 'state', 'queued', 'not_before', not_before)
  redis.call('HDEL', key, 'token', 'worker', 'started_at', 'lease_expires')
  redis.call('ZREM', P .. 'leases', run.run_id)
  run.not_before = not_before
  make_ready(run, now)
end

-- Replace the hash at `key` with the fields of the JSON object `text` (string values), in
-- batches (unpack takes a bounded number of arguments): the leader's replace-all writes.
local function replace_hash(key, text)
  redis.call('DEL', key)
  local flat = {}
  for field, value in pairs(cjson.decode(text)) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
    if #flat >= 1000 then
      redis.call('HSET', key, unpack(flat))
      flat = {}
    end
  end
  if #flat > 0 then
    redis.call('HSET', key, unpack(flat))
  end
end

-- The lease at `key` as a 'fenced' reply: {'fenced', epoch, node} of the lease the store holds
-- (false, false when it holds none), so the refused caller can say what it found.
local function fenced_reply(key)
  local v = redis.call('HMGET', key, 'epoch', 'node')
  return {'fenced', v[1], v[2]}
end

-- The live run, else its newest history entry: {'live', HGETALL} | {'history', json} | false.
local function find_run(run_id, job)
  local flat = redis.call('HGETALL', P .. 'run:' .. run_id)
  if #flat > 0 then
    return {'live', flat}
  end
  for _, text in ipairs(redis.call('LRANGE', P .. 'history:' .. job, 0, -1)) do
    -- A plain substring test first: most entries are other runs and need no decoding.
    if string.find(text, run_id, 1, true) and cjson.decode(text).run_id == run_id then
      return {'history', text}
    end
  end
  return false
end

