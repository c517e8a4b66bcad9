-- reap.lua: reclaim runs whose attempt lease expired (Store.reap).
--
-- KEYS[1]  leases zset (run id by attempt-lease expiry, µs)
-- ARGV[1]  key prefix; ARGV[2] history; ARGV[3] at most this many runs per call
-- Also     run:<id>, token:<token>, job:<job>, history:<job>, live, live:<job>, waiting:<job>,
--          queued:<q>, q:<q>, queues; chains and the keys of the runs it starts (follow_chains)
-- Returns  the run ids reaped. Attempts left: queued again, ready now. None left: ends 'lost'
--          (history, last outcome, waiting successor released, chains followed). A suspect run (created before
--          the store's latest rollback) ends 'uncertain' instead: its attempt may have run in the
--          lost window. The token is deleted either way, so the old worker's heartbeat and finish
--          are refused.
-- Twice:   the first run removed those ids from the leases zset; the second finds none due and
--          returns an empty list.

local now = now_us()
local reaped = {}
local due = redis.call('ZRANGE', KEYS[1], '-inf', fmt(now), 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
for _, run_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], run_id)
  local run = hgetall(P .. 'run:' .. run_id)
  if run and run.state == 'running' and tonumber(run.lease_expires) <= now then
    redis.call('DEL', P .. 'token:' .. run.token)
    if is_suspect(run) then
      end_run(run, 'uncertain', now, tonumber(ARGV[2]), {error = UNCERTAIN_WHY})
    elseif tonumber(run.attempt) < tonumber(run.max_attempts) then
      requeue(run, fmt(now), now)
    else
      end_run(run, 'lost', now, tonumber(ARGV[2]))
    end
    reaped[#reaped + 1] = run_id
  end
end
return reaped
