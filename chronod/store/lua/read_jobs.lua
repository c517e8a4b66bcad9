-- read_jobs.lua: every stored job state, as one consistent snapshot (Store.job_states). Read-only.
--
-- KEYS[1]  jobs set
-- ARGV[1]  key prefix
-- Also     job:<name>, live:<name>
-- Returns  {job_reply...} (any order).
-- Twice:   reads only.

local reply = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  reply[#reply + 1] = job_reply(name)
end
return reply
