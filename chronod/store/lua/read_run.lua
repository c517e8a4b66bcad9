-- read_run.lua: the live run, else its newest history entry (Store.run). Read-only.
--
-- KEYS[1]  run:<id> hash
-- KEYS[2]  history:<job> list (the job is the run id up to its last '@')
-- ARGV[1]  key prefix; ARGV[2] run id; ARGV[3] job
-- Returns  {'live', HGETALL} | {'history', json} | false
-- Twice:   reads only.

return find_run(ARGV[2], ARGV[3])
