-- hand_back.lua: return a claimed run to its queue without spending an attempt (Store.hand_back).
--
-- KEYS[1]  run:<id> hash
-- KEYS[2]  token:<token> hash
-- ARGV[1]  key prefix; ARGV[2] run id; ARGV[3] token
-- Also     leases, queued:<q>, q:<q>, queues
-- Returns  1 handed back (attempt counter back by one, queued, ready now), 0 stale token.
-- Twice:   the first run deleted the token, so the second answers 0 and changes nothing: the
--          attempt counter never goes back twice.

local now = now_us()
local run = hgetall(KEYS[1])
if not run or run.state ~= 'running' or run.token ~= ARGV[3] then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'attempt', fmt(tonumber(run.attempt) - 1))
requeue(run, run.not_before, now)
return 1
