-- begin_external.lua: claim the one execution of a run by another system, such as a Celery
-- worker (Store.begin_external; docs/celery.md).
--
-- KEYS[1]  external:<run_id>#<try_no> hash (executor, started_at, ended)
-- ARGV[1]  key prefix; ARGV[2] executor; ARGV[3] how long the record is kept (µs)
-- Returns  1: this executor executes | 0: another executor holds the pair (do not execute).
-- Twice:   the first run wrote this executor, so a repeat finds it, answers 1 again and writes
--          nothing.

local now = now_us()
local holder = redis.call('HGET', KEYS[1], 'executor')
if holder then
  if holder == ARGV[2] then
    return 1
  end
  return 0
end
redis.call('HSET', KEYS[1], 'executor', ARGV[2], 'started_at', fmt(now), 'ended', '0')
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[3]) / 1000))
return 1
