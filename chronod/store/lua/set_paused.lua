-- set_paused.lua: pause or resume a job (Store.set_paused; an operator action, not fenced).
--
-- KEYS[1]  job:<name> hash
-- KEYS[2]  jobs set
-- ARGV[1]  key prefix; ARGV[2] name; ARGV[3] '1' pause / '0' resume
-- Returns  job_reply of the job.
-- Twice:   pausing a paused job changes nothing; resuming moves the watermark only when the job
--          was paused, so a repeated resume finds it running and changes nothing.

local now = now_us()
local name = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- A pause may precede the job's first load: state with an empty fingerprint.
  redis.call('HSET', KEYS[1], 'fingerprint', '', 'paused', '0', 'missed', '0')
  redis.call('SADD', KEYS[2], name)
end
local was = redis.call('HGET', KEYS[1], 'paused')
if ARGV[3] == '0' and was == '1' then
  -- Nothing from the paused period runs afterwards: the watermark moves to at least now.
  local watermark = tonumber(redis.call('HGET', KEYS[1], 'watermark') or '0')
  if watermark < now then
    redis.call('HSET', KEYS[1], 'watermark', fmt(now))
  end
end
redis.call('HSET', KEYS[1], 'paused', ARGV[3])
return job_reply(name)
