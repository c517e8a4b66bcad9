"""The leader's side of the PostgreSQL store: the statements of the SQL stores' leader
(:class:`chronod.store.sqlite.leader.Leader`: the lease, and the writes it fences) in
PostgreSQL's dialect. Each method of :data:`POSTGRES_LEADER` runs inside the caller's
SERIALIZABLE transaction (:class:`~chronod.store.postgres.connection.Tx`), and every fenced one
reads the lease row first, in that same transaction.

Lists of names and the batch's (job, slot) pairs arrive as JSON text, as SQLite's statements take
them, and are unpacked with ``jsonb_array_elements``.
"""

from __future__ import annotations

from chronod.store.postgres.rows import INSERT_HISTORY, JOB, JOB_COLUMNS, TRIM_HISTORY
from chronod.store.sqlite.leader import Leader, LeaderSQL
from chronod.store.sqlite.outbox import POSTGRES_OUTBOX

_NAMES_IN = "(SELECT jsonb_array_elements_text(%s::jsonb))"

_LEASE = "SELECT token, epoch, node, expires_at FROM lease WHERE id = 1"
_BUMP_EPOCH = "UPDATE counters SET value = value + 1 WHERE name = 'epoch'"
_EPOCH = "SELECT value FROM counters WHERE name = 'epoch'"
_PUT_LEASE = """INSERT INTO lease (id, token, epoch, node, expires_at) VALUES (1, %s, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET token = excluded.token, epoch = excluded.epoch,
        node = excluded.node, expires_at = excluded.expires_at"""
_EXTEND_LEASE = "UPDATE lease SET expires_at = %s WHERE id = 1"
_DROP_LEASE = "DELETE FROM lease WHERE id = 1 AND token = %s AND epoch = %s"

_CREATE_JOB = "INSERT INTO jobs (name, fingerprint, watermark, next_due) VALUES (%s, %s, %s, %s)"
_REDEFINE_JOB = """UPDATE jobs SET fingerprint = %s,
    watermark = greatest(coalesce(watermark, %s), %s), next_due = %s WHERE name = %s"""
# The columns are typed: only an out-of-range value can make a row unreadable.
_RESET_JOB = """UPDATE jobs SET fingerprint = %s, watermark = %s, last_slot = NULL, next_due = %s,
    paused = CASE WHEN paused = 1 THEN 1 ELSE 0 END, missed = greatest(missed, 0)
    WHERE name = %s"""
_TO_RETIRE = f"""SELECT name FROM jobs WHERE fingerprint != '' AND name NOT IN {_NAMES_IN}
    ORDER BY name"""
_RETIRE_JOB = "UPDATE jobs SET fingerprint = '' WHERE name = %s"
# The jobs named in the first list, each with whether it has a live run, looked up only for those
# in the second. Each list becomes a set of rows joined by the primary key: `jsonb ? name` in a
# WHERE clause tested every row of `jobs` against the whole array (a 2,000-slot batch took 1.7 s
# among 100,000 jobs instead of 9 ms, so a tick of 100,000 slots took 77 s: bench_tick).
_BATCH_JOBS = """WITH names AS (SELECT jsonb_array_elements_text(%s::jsonb) AS name),
        watched AS (SELECT jsonb_array_elements_text(%s::jsonb) AS name)
    SELECT jobs.name, fingerprint, watermark, last_slot, next_due, paused, missed,
        CASE WHEN jobs.name IN (SELECT name FROM watched)
            THEN EXISTS (SELECT 1 FROM runs WHERE runs.job = jobs.name) ELSE false END AS active
    FROM jobs WHERE jobs.name IN (SELECT name FROM names)"""
_BATCH_JOB_STATES = f"SELECT {JOB_COLUMNS} FROM jobs WHERE name IN {_NAMES_IN}"
_ACTIVE_RUNS = "SELECT count(*) AS n FROM runs WHERE job = %s"
_NEWEST_LIVE_RUN = "SELECT run_id, state FROM runs WHERE job = %s ORDER BY seq DESC LIMIT 1"
_SET_PROGRESS = "UPDATE jobs SET watermark = %s, last_slot = %s, next_due = %s WHERE name = %s"
_SET_ADVANCED = "UPDATE jobs SET missed = %s, watermark = %s, next_due = %s WHERE name = %s"
# Which (job, slot) pairs of a batch (a JSON list of [job, slot]) are guarded: one PK probe each.
_BATCH_GUARDS = """SELECT g.job, g.slot, g.expires_at FROM jsonb_array_elements(%s::jsonb) AS w
    JOIN guards AS g ON g.job = w->>0 AND g.slot = (w->>1)::bigint"""
# A plain INSERT: the guard is the primary key, so a second guard of a slot cannot commit.
_INSERT_GUARD = "INSERT INTO guards (job, slot, expires_at) VALUES (%s, %s, %s)"
_PRUNE_GUARDS = """DELETE FROM guards WHERE (job, slot) IN
    (SELECT job, slot FROM guards WHERE expires_at <= %s LIMIT %s)"""
_INSERT_DISPATCHED_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest,
        epoch, attempt, max_attempts, created_at, not_before)
    VALUES (%s, %s, %s, 0, %s, %s, %s, %s, 0, %s, %s, %s)"""

POSTGRES_LEADER = Leader(
    LeaderSQL(
        lease=_LEASE,
        bump_epoch=_BUMP_EPOCH,
        epoch=_EPOCH,
        put_lease=_PUT_LEASE,
        extend_lease=_EXTEND_LEASE,
        drop_lease=_DROP_LEASE,
        job=JOB,
        create_job=_CREATE_JOB,
        redefine_job=_REDEFINE_JOB,
        reset_job=_RESET_JOB,
        to_retire=_TO_RETIRE,
        retire_job=_RETIRE_JOB,
        batch_jobs=_BATCH_JOBS,
        batch_job_states=_BATCH_JOB_STATES,
        active_runs=_ACTIVE_RUNS,
        newest_live_run=_NEWEST_LIVE_RUN,
        set_progress=_SET_PROGRESS,
        set_advanced=_SET_ADVANCED,
        batch_guards=_BATCH_GUARDS,
        insert_guard=_INSERT_GUARD,
        prune_guards=_PRUNE_GUARDS,
        insert_dispatched_run=_INSERT_DISPATCHED_RUN,
        insert_history=INSERT_HISTORY,
        trim_history=TRIM_HISTORY,
    ),
    POSTGRES_OUTBOX,
)
