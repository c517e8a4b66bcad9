-- _generation.lua: the generation prologue every script runs (RedisStore appends it to
-- _common.lua and wraps each script's own code in a function, `body`, that runs after it).
--
-- The store's generation is a counter in the gen hash that every writing script increments. Each
-- chronod process remembers the highest generation it knows to be durable (acknowledged by the
-- configured number of replicas; with none configured, any it has seen) and presents it with
-- every call. A store whose counter is below it has lost writes a running process relied on: it
-- came back from an older snapshot or AOF, a lagging replica was promoted beyond the configured
-- acknowledgements, or it was flushed. That is a rollback, and the first call that presents the
-- evidence records it here, atomically, before anything else is read or written:
--
--   * rb (the rollback count) grows by one. Runs carry the count they were created under
--     (create_run): a run created before the latest rollback is suspect and is never started
--     again; claim.lua and reap.lua end it 'uncertain' (a worker still running it may finish it);
--   * rb_at = store time of the detection: dispatch.lua and advance.lua record every slot after
--     its job's watermark and at or before rb_at as 'uncertain' instead of running it;
--   * rb_seen_at = the store time of the newest generation a witness saw (sync_jobs.lua uses it
--     for jobs whose state was lost altogether);
--   * the counter jumps far above the presented generation, so other witnesses of the same lost
--     history do not report it again, and the epoch counter jumps ahead (G_EPOCH_JUMP, and at
--     least its clock floor), so no fencing epoch the store handed out before the loss is ever
--     handed out again.
--
-- Trailing KEYS (removed here): the gen hash, then the canary key. The canary is never written;
-- declaring it makes Redis Cluster refuse every script with TRYAGAIN while the namespace's slot
-- is being migrated (a declared key is missing), so no script runs against half-moved data.
-- Trailing ARGV (removed here): the outbox limit (OUTBOX_LIMIT in _common.lua), the caller's
-- durable generation, its store time (µs), the
-- rollback count the caller last saw ('' for none), strict ('1': a leader write that must be
-- refused when a rollback happened since the caller last looked), write ('1': bump the counter).
-- The script's reply comes back as {{n, rb, rb_at, rb_restored, rb_lost, at}, reply}, at = store
-- time (µs) of the latest increment; a strict call
-- refused because of a rollback answers {gen, {'rolledback'}} and writes nothing else.

local CANARY = table.remove(KEYS)
local GEN = table.remove(KEYS)
local G_WRITE = table.remove(ARGV) == '1'
local G_STRICT = table.remove(ARGV) == '1'
local G_RB = table.remove(ARGV)
local G_SEEN_AT = tonumber(table.remove(ARGV)) or 0
local G_SEEN = tonumber(table.remove(ARGV)) or 0
OUTBOX_LIMIT = tonumber(table.remove(ARGV)) or OUTBOX_LIMIT
-- Far above any generation a process can have seen of the lost history (2^32 writes).
local G_JUMP = 4294967296
-- After a rollback the epoch counter moves past every epoch the lost window can have handed out:
-- G_EPOCH_JUMP acquisitions (each one waits for a lease to end) beyond the larger of the counter
-- and the milliseconds since 2025-01-01 (store time). A counter seeded from that clock
-- (acquire.lua, on an empty store) could only be ahead of it with more than one acquisition per
-- millisecond, ever; and two rollbacks to the same old state, detected at different instants,
-- start from different floors.
local G_EPOCH_JUMP = 1000
local EPOCH_ORIGIN_MS = 1735689600000

local function epoch_floor(now)
  return math.floor(now / 1000) - EPOCH_ORIGIN_MS
end

local function generation(body)
  local now = now_us()
  local g = redis.call('HMGET', GEN, 'n', 'rb', 'rb_at', 'rb_restored', 'rb_lost', 'rb_seen_at',
                       'at')
  local n = tonumber(g[1] or '0')
  if G_SEEN > n then
    local rb = fmt(tonumber(g[2] or '0') + 1)
    local seen_at = math.max(G_SEEN_AT, tonumber(g[6] or '0'))
    g = {fmt(G_SEEN + G_JUMP), rb, fmt(now), fmt(n), fmt(G_SEEN), fmt(seen_at), g[7]}
    redis.call('HSET', GEN, 'n', g[1], 'rb', g[2], 'rb_at', g[3], 'rb_restored', g[4],
               'rb_lost', g[5], 'rb_seen_at', g[6])
    redis.call('HDEL', GEN, 'rb_reconciled')
    local epoch_key = P .. 'epoch'
    local epoch = tonumber(redis.call('GET', epoch_key) or '0')
    redis.call('SET', epoch_key, fmt(math.max(epoch, epoch_floor(now)) + G_EPOCH_JUMP))
  end
  RB = g[2] or '0'
  ROLLBACK_AT = tonumber(g[3] or '-1')
  local function info()
    return {g[1] or '0', RB, g[3] or '', g[4] or '', g[5] or '', g[7] or ''}
  end
  if G_STRICT and G_RB ~= '' and G_RB ~= RB then
    return {info(), {'rolledback'}}
  end
  if G_WRITE then
    g[1] = fmt(redis.call('HINCRBY', GEN, 'n', 1))
    g[7] = fmt(now)
    redis.call('HSET', GEN, 'at', g[7])
  end
  local reply = body()
  if reply == nil then
    reply = false
  end
  return {info(), reply}
end
