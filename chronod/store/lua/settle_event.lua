-- settle_event.lua: after a delivery attempt, remove an event or set when it is retried
-- (Store.settle_event).
--
-- KEYS[1]  outbox zset (event id by seq); KEYS[2] outbox:due zset; KEYS[3] outbox:events hash
-- ARGV[1]  key prefix; ARGV[2] event id; ARGV[3] attempts; ARGV[4] JSON array of the targets
--          done; ARGV[5] retry at (µs; '' removes the event)
-- Returns  1 if the event was in the outbox, else 0.
-- Twice:   the values are absolute: a second removal finds nothing (0), a second retry writes
--          the same attempts, targets and due instant again.

local id = ARGV[2]
local seq = redis.call('ZSCORE', KEYS[1], id)
local text = redis.call('HGET', KEYS[3], id)
if not seq or not text then
  return 0
end
local member = string.format('%016d %s', tonumber(seq), id)
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[3], id)
  return 1
end
local event = cjson.decode(text)
event.attempts = tonumber(ARGV[3])
event.done = ARGV[4]
redis.call('HSET', KEYS[3], id, cjson.encode(event))
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), member)
return 1
