-- end_external.lua: record how an execution begun by begin_external.lua ended
-- (Store.end_external; docs/celery.md).
--
-- KEYS[1]  external:<run_id>#<try_no> hash (executor, started_at, ended)
-- ARGV[1]  key prefix; ARGV[2] executor; ARGV[3] JSON object of the entry's run fields
--          (run_id, job, slot, manual, queue, digest, epoch, attempt, max_attempts, worker:
--          strings); ARGV[4] outcome; ARGV[5] JSON object of the extra history fields
--          (exit_code, output, error: strings, present only when set); ARGV[6] history
-- Also     history:<job>, job:<job>, jobs, the outbox keys (append_event in _common.lua), and
--          chains and the keys of the runs it starts (follow_chains in _common.lua)
-- Returns  1: recorded (by this run or before) | 0: no record, or another executor's.
-- Twice:   the first run set ended = 1, so a repeat finds it, answers 1 and writes nothing.

local now = now_us()
local found = redis.call('HMGET', KEYS[1], 'executor', 'started_at', 'ended')
if not found[1] or found[1] ~= ARGV[2] then
  return 0
end
if found[3] == '1' then
  return 1
end
redis.call('HSET', KEYS[1], 'ended', '1')
local run = cjson.decode(ARGV[3])
run.created_at = found[2]
run.started_at = found[2]
local outcome = ARGV[4]
local entry = history_entry(run, outcome, now, cjson.decode(ARGV[5]))
push_history(run.job, entry, tonumber(ARGV[6]))
record_outcome(run.job, entry, now)
follow_chains(entry, now, tonumber(ARGV[6]))
return 1
