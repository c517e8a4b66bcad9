-- claim.lua: start the next attempt of the oldest ready run in the given queues (Store.claim).
--
-- How the queue works: queued:<queue> (a zset scored by not_before, ties by creation) is the
-- queue; the stream q:<queue> only carries tickets, one per run that became ready, so that a
-- worker can block (XREADGROUP BLOCK) until there is something to claim. The client passes the
-- tickets it read; this script acks and deletes them, claims the oldest ready run of all the
-- given queues (exact order, whatever order tickets arrived in), keeps one ticket of the claimed
-- run's queue as spent and re-adds the others, so every queue keeps at least as many unread
-- tickets as ready runs and no idle worker of that queue sleeps through one.
--
-- KEYS[3i-2], KEYS[3i-1], KEYS[3i]  queued:<q>, delayed:<q>, q:<q> of the i-th queue
-- ARGV[1]  key prefix; ARGV[2] attempt token; ARGV[3] worker (also the consumer name);
-- ARGV[4]  attempt ttl (µs); ARGV[5] n = number of queues; ARGV[6 .. 5+n] queue names;
-- ARGV[6+n .. 5+2n]  the ticket ids read from each queue's stream (space-separated, may be '');
-- ARGV[6+2n]  history (entries kept per job)
-- Also     run:<id>, token:<token>, leases; event_kinds and outbox* (a 'started' event)
-- Returns  {'claim', HGETALL of the running run, ended} | {'none', ended}: ended = ids of the
--          suspect runs this call ended 'uncertain' instead of claiming (created before the
--          store's latest rollback, see _generation.lua).
-- Twice:   the token is recorded on the attempt (token:<token>), so a repeat returns the same
--          claim and starts nothing; tickets the first run already acked are not acked (nor
--          re-added) again (XACK answers 0).

local now = now_us()
local token, worker, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local keep = tonumber(ARGV[6 + 2 * n])
local ended = {}
local queues, held = {}, {}
for i = 1, n do
  local q = {name = ARGV[5 + i], queued = KEYS[3 * i - 2], delayed = KEYS[3 * i - 1],
             stream = KEYS[3 * i]}
  queues[i] = q
  held[i] = {}
  for id in string.gmatch(ARGV[5 + n + i], '%S+') do
    local entry = redis.call('XRANGE', q.stream, id, id)[1]
    if redis.call('XACK', q.stream, GROUP, id) == 1 then
      redis.call('XDEL', q.stream, id)
      held[i][#held[i] + 1] = entry and entry[2] or {'run', ''}
    end
  end
end

-- Re-add the tickets taken over above, except one of queue `spent` (0: none spent).
local function give_back(spent)
  for i = 1, n do
    for j, fields in ipairs(held[i]) do
      if not (i == spent and j == 1) then
        redis.call('XADD', queues[i].stream, '*', unpack(fields))
      end
    end
  end
end

local token_key = P .. 'token:' .. token
local used = redis.call('HMGET', token_key, 'run', 'status')
if used[1] then
  give_back(0)
  local run = hgetall(P .. 'run:' .. used[1])
  if not used[2] and run and run.token == token and run.state == 'running' then
    return {'claim', redis.call('HGETALL', P .. 'run:' .. used[1]), ended}
  end
  return {'none', ended}
end

local bound = fmt(now)
while true do
  local best, best_i, best_score = nil, 0, 0
  for i = 1, n do
    local top = redis.call('ZRANGE', queues[i].queued, '-inf', bound, 'BYSCORE', 'LIMIT', 0, 1,
                           'WITHSCORES')
    if top[1] then
      local score = tonumber(top[2])
      if best == nil or score < best_score or (score == best_score and top[1] < best) then
        best, best_i, best_score = top[1], i, score
      end
    end
  end
  if best == nil then
    -- Nothing ready in any of these queues: the tickets taken over were surplus.
    return {'none', ended}
  end
  local q = queues[best_i]
  local run_id = string.sub(best, 18)
  local key = P .. 'run:' .. run_id
  local run = hgetall(key)
  redis.call('ZREM', q.queued, best)
  redis.call('ZREM', q.delayed, run_id)
  if run and run.state == 'queued' and is_suspect(run) then
    end_run(run, 'uncertain', now, keep, {error = UNCERTAIN_WHY})
    ended[#ended + 1] = run_id
  elseif run and run.state == 'queued' then
    local expires = fmt(now + ttl)
    redis.call('HSET', key, 'state', 'running', 'attempt', fmt(tonumber(run.attempt) + 1),
               'token', token, 'worker', worker, 'started_at', fmt(now), 'lease_expires', expires)
    redis.call('HDEL', key, 'ticketed')
    redis.call('ZADD', P .. 'leases', expires, run_id)
    redis.call('HSET', token_key, 'run', run_id)
    run.attempt, run.worker, run.started_at = fmt(tonumber(run.attempt) + 1), worker, fmt(now)
    local entry = history_entry(run, 'running', now)
    entry.finished_at = nil
    append_event(run.job, entry, nil, now, true)
    local spent = 0
    if run.ticketed == '1' then
      if #held[best_i] > 0 then
        spent = best_i
      else
        -- Spend an unread ticket of this queue (if none is left unread, one is in a reader's
        -- hands and that reader's claim finds this queue empty and drops it).
        local got = redis.call('XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', 1,
                               'STREAMS', q.stream, '>')
        if got then
          local id = got[1][2][1][1]
          redis.call('XACK', q.stream, GROUP, id)
          redis.call('XDEL', q.stream, id)
        end
      end
    end
    give_back(spent)
    return {'claim', redis.call('HGETALL', key), ended}
  end
  -- A queue member without a queued run cannot be claimed: it was dropped above; look again.
end
