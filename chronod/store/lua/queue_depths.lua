-- queue_depths.lua: runs in state queued per queue, ready or not yet (Store.queue_depths).
-- Read-only.
--
-- KEYS[1]  queues set
-- ARGV[1]  key prefix
-- Also     queued:<q>
-- Returns  {queue, count, queue, count, ...} for the queues with at least one queued run.
-- Twice:   reads only.

local reply = {}
for _, queue in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = redis.call('ZCARD', P .. 'queued:' .. queue)
  if count > 0 then
    reply[#reply + 1] = queue
    reply[#reply + 1] = count
  end
end
return reply
