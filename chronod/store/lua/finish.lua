-- finish.lua: record the end of an attempt (Store.finish).
--
-- KEYS[1]  run:<id> hash
-- KEYS[2]  token:<token> hash (run, status, result): remembers the answer for a day
-- ARGV[1]  key prefix; ARGV[2] run id; ARGV[3] token; ARGV[4] outcome;
-- ARGV[5]  JSON object of the attempt's extra history fields (exit_code, output, error: strings,
--          present only when set); ARGV[6] retry_at (µs, '' for none); ARGV[7] history
-- Also     job:<job>, history:<job>, live, live:<job>, leases, waiting:<job>, queued:<q>,
--          delayed:<q>, q:<q>, queues; chains and the keys of the runs it starts (follow_chains)
-- Returns  'accepted' | 'retry' | 'stale' (token not the running attempt's: nothing written).
-- Twice:   the first run stored its answer and a digest of its result (outcome and ARGV[5])
--          under the token, so a repeat with the same result gets the same answer ('accepted' or
--          'retry') and writes nothing; a different late result from that attempt is 'stale'.

local now = now_us()
local run_id, token, outcome, retry_at = ARGV[2], ARGV[3], ARGV[4], ARGV[6]
local result = redis.sha1hex(outcome .. '\n' .. ARGV[5])
local done = redis.call('HMGET', KEYS[2], 'run', 'status', 'result')
if done[1] == run_id and done[2] then
  if done[3] == result then
    return done[2]
  end
  return 'stale'
end
local run = hgetall(KEYS[1])
if not run or run.state ~= 'running' or run.token ~= token then
  return 'stale'
end
local keep = tonumber(ARGV[7])
local extra = cjson.decode(ARGV[5])
local status
if (outcome == 'failed' or outcome == 'timed-out') and retry_at ~= ''
    and tonumber(run.attempt) < tonumber(run.max_attempts) then
  push_history(run.job, history_entry(run, outcome, now, extra), keep)
  requeue(run, retry_at, now)
  status = 'retry'
else
  end_run(run, outcome, now, keep, extra)
  status = 'accepted'
end
redis.call('HSET', KEYS[2], 'run', run_id, 'status', status, 'result', result)
redis.call('PEXPIRE', KEYS[2], 86400000)
return status
