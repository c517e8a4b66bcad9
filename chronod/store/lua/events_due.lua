-- events_due.lua: the outbox events due for delivery (Store.events_due).
--
-- KEYS[1]  outbox:due zset (member '<seq:016d> <event id>', score: next delivery, µs)
-- KEYS[2]  outbox:events hash (event id -> JSON {kind, entry, created, attempts, done})
-- ARGV[1]  key prefix; ARGV[2] at most this many events
-- Returns  a flat array: event id, its JSON, … in due order, then append order.
-- Twice:   it writes nothing; a second run reads the same events.

local now = now_us()
local due = redis.call('ZRANGE', KEYS[1], '-inf', fmt(now), 'BYSCORE', 'LIMIT', 0,
                       tonumber(ARGV[2]))
local found = {}
for _, member in ipairs(due) do
  local id = string.sub(member, 18)
  local event = redis.call('HGET', KEYS[2], id)
  if event then
    found[#found + 1] = id
    found[#found + 1] = event
  end
end
return found
