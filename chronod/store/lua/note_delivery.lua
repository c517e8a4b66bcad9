-- note_delivery.lua: record a delivery attempt over a notification channel
-- (Store.note_delivery).
--
-- KEYS[1]  deliveries hash (channel -> JSON {ok_at, error, error_at}, instants in µs)
-- ARGV[1]  key prefix; ARGV[2] channel; ARGV[3] '1' if it failed; ARGV[4] the error (cut to
--          500 characters by the caller)
-- Returns  1.
-- Twice:   the second run writes the same fields with a later instant.

local now = now_us()
local text = redis.call('HGET', KEYS[1], ARGV[2])
local state = text and cjson.decode(text) or {}
if ARGV[3] == '1' then
  state.error = ARGV[4]
  state.error_at = fmt(now)
else
  state.ok_at = fmt(now)
end
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(state))
return 1
