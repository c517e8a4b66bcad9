-- live_runs.lua: queued, waiting and running runs, oldest (first created) first
-- (Store.live_runs). Read-only.
--
-- KEYS[1]  live or live:<job> zset (run ids by creation seq)
-- ARGV[1]  key prefix
-- Also     run:<id>
-- Returns  {HGETALL...}
-- Twice:   reads only.

local reply = {}
for _, run_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local flat = redis.call('HGETALL', P .. 'run:' .. run_id)
  if #flat > 0 then
    reply[#reply + 1] = flat
  end
end
return reply
