-- promote.lua: keep the tickets of the given queues in step with their runs (run by claim()
-- before looking, so no separate janitor process is needed).
--
--  * creates each queue's stream and consumer group if missing (so XREADGROUP never fails);
--  * due retries: runs in delayed:<q> whose not_before has come get their ticket;
--  * abandoned deliveries: tickets a worker read (XREADGROUP) but never handed to claim.lua
--    because it died in between are, once idle for ARGV[2] ms, taken over (XAUTOCLAIM), deleted
--    and added again as fresh unread tickets;
--  * consumers idle for ARGV[3] ms with nothing pending (exited workers) are deleted.
--
-- KEYS[1]  leases (attempt-lease expiries: a blocked claim wakes when one can be reaped)
-- KEYS[2i], KEYS[2i+1]  delayed:<q>, q:<q> of the i-th queue
-- ARGV[1]  key prefix; ARGV[2] min idle (ms) of an abandoned ticket; ARGV[3] consumer idle (ms)
-- ARGV[3+i]  name of the i-th queue
-- Also     run:<id> of promoted runs
-- Returns  {now (µs), next wake-up (µs: earliest delayed retry of these queues or attempt-lease
--          expiry), or ''}
-- Twice:   the second run finds nothing due and nothing idle; it changes nothing.

local now = now_us()
local wake = nil
local function earliest(key)
  local top = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if top[1] then
    local at = tonumber(top[2])
    if wake == nil or at < wake then
      wake = at
    end
  end
end

for i = 4, #ARGV do
  local queue = ARGV[i]
  local delayed, stream = KEYS[2 * (i - 3)], KEYS[2 * (i - 3) + 1]
  ensure_queue(queue)
  for _, run_id in ipairs(redis.call('ZRANGE', delayed, '-inf', fmt(now), 'BYSCORE')) do
    redis.call('ZREM', delayed, run_id)
    local run = hgetall(P .. 'run:' .. run_id)
    if run and run.state == 'queued' and run.ticketed ~= '1' then
      add_ticket(queue, ticket_fields(run))
      redis.call('HSET', P .. 'run:' .. run_id, 'ticketed', '1')
    end
  end
  local taken = redis.call('XAUTOCLAIM', stream, GROUP, 'janitor', ARGV[2], '0-0', 'COUNT', 100)
  for _, entry in ipairs(taken[2]) do
    redis.call('XACK', stream, GROUP, entry[1])
    redis.call('XDEL', stream, entry[1])
    if entry[2] then
      redis.call('XADD', stream, '*', unpack(entry[2]))
    end
  end
  for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, GROUP)) do
    local info = {}
    for j = 1, #consumer, 2 do
      info[consumer[j]] = consumer[j + 1]
    end
    if info.pending == 0 and info.idle > tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', stream, GROUP, info.name)
    end
  end
  earliest(delayed)
end
earliest(KEYS[1])
return {fmt(now), wake and fmt(wake) or ''}
