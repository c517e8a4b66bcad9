-- enqueue_manual.lua: queue a manual run now (Store.enqueue_manual; not fenced).
--
-- KEYS[1]  guard:<job>:m<t> (value: the caller's nonce; expires after a day)
-- ARGV[1]  key prefix; ARGV[2] job; ARGV[3] queue; ARGV[4] digest; ARGV[5] overlap;
-- ARGV[6]  max_attempts; ARGV[7] run id (NAME@<t>~manual); ARGV[8] t (µs, store time read by
--          the client just before: the id must be fixed before the call for a retry to be
--          recognised); ARGV[9] nonce (random, per enqueue_manual call)
-- Also     run:<id>, live, live:<job>, waiting:<job>, queued:<queue>, q:<queue>, queues, seq
-- Returns  {'ok', HGETALL of the new run} | {'repeat', find_run reply} | {'taken'} (another
--          trigger got the same microsecond: the client reads the time again and retries).
-- Twice:   the guard holds this call's nonce, so the second run answers 'repeat' with the same
--          run instead of creating a second one. Watermark, last_slot and slot guards are never
--          touched: a manual run consumes no slot.

local now = now_us()
local job, run_id = ARGV[2], ARGV[7]
local owner = redis.call('GET', KEYS[1])
if owner then
  if owner == ARGV[9] then
    return {'repeat', find_run(run_id, job)}
  end
  return {'taken'}
end
redis.call('SET', KEYS[1], ARGV[9], 'PX', 86400000)
local run = {
  run_id = run_id, job = job, slot = ARGV[8], manual = '1', queue = ARGV[3], digest = ARGV[4],
  epoch = '0', max_attempts = ARGV[6], created_at = ARGV[8], not_before = ARGV[8],
}
-- An operator who asks for a run gets one: 'skip' and 'queue' both wait behind an active run.
if ARGV[5] ~= 'allow' and redis.call('ZCARD', P .. 'live:' .. job) > 0 then
  run.state = 'waiting'
else
  run.state = 'queued'
end
create_run(run, now)
return {'ok', redis.call('HGETALL', P .. 'run:' .. run_id)}
