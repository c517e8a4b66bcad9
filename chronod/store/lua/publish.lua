-- publish.lua: queue the runs dispatch.lua held back until the replicas acknowledged them.
--
-- RedisStore calls this after a dispatch (or a leader's load) whose WAIT reached the configured
-- number of replicas: the held runs are then durable, and only now do they enter their queues
-- and get their tickets, so no worker can claim a run a failover could still take back. Every
-- held run is published, not only the caller's: a leader that died between its acknowledged
-- dispatch and this call leaves its runs to the next one.
--
-- KEYS[1]  pending zset (held run ids by creation seq)
-- ARGV[1]  key prefix; ARGV[2] at most this many runs per call
-- Also     run:<id>, queued:<q>, q:<q>, delayed:<q>, queues
-- Returns  the number of runs still pending after this call (the caller calls again while > 0).
-- Twice:   the first run removed the runs it published from `pending` and cleared their `held`
--          flag; the second finds them gone and publishes nothing twice.

local now = now_us()
for _, run_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  redis.call('ZREM', KEYS[1], run_id)
  local key = P .. 'run:' .. run_id
  local run = hgetall(key)
  if run and run.held == '1' then
    redis.call('HDEL', key, 'held')
    if run.state == 'queued' then
      make_ready(run, now)
    end
  end
end
return redis.call('ZCARD', KEYS[1])
