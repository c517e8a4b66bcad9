-- outbox_stats.lua: how many events wait in the outbox, and how many were dropped
-- (Store.outbox_stats).
--
-- KEYS[1]  outbox zset; KEYS[2] outbox:info hash (seq, dropped)
-- ARGV[1]  key prefix
-- Returns  {depth, dropped}.
-- Twice:   it writes nothing.

return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('HGET', KEYS[2], 'dropped') or '0')}
