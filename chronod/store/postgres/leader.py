"""The leader's side of the PostgreSQL store: the lease, and the writes it fences (loading jobs,
retiring them, dispatching slots, recording missed ones). Each function runs inside the caller's
SERIALIZABLE transaction (:class:`~chronod.store.postgres.connection.Tx`), and every fenced one
reads the lease row first, in that same transaction.

The rules are the SQLite store's (``chronod/store/sqlite/leader.py``), decided in Python by the
same plans (:class:`~chronod.store.sqlite.leader._DispatchPlan`, ``_AdvancePlan``) against a view
of the batch's rows read once; only the statements differ. ``tests/test_store_stateful.py``
checks that the stores answer alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from chronod.instants import from_micros, to_micros
from chronod.store._common import micros, refusal
from chronod.store.base import (
    DispatchResult,
    Fenced,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    SlotDispatch,
    overlap_reason,
)
from chronod.store.postgres.connection import Tx
from chronod.store.postgres.rows import INSERT_HISTORY, JOB, JOB_COLUMNS, TRIM_HISTORY
from chronod.store.sqlite.leader import (
    _NO_JOB,
    GUARD_PRUNE_EXTRA,
    _AdvancePlan,
    _BatchJob,
    _DispatchPlan,
)
from chronod.store.sqlite.rows import READ

LEASE = "SELECT token, epoch, node, expires_at FROM lease WHERE id = 1"
_BUMP_EPOCH = "UPDATE counters SET value = value + 1 WHERE name = 'epoch' RETURNING value"
_PUT_LEASE = """INSERT INTO lease (id, token, epoch, node, expires_at) VALUES (1, %s, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET token = excluded.token, epoch = excluded.epoch,
        node = excluded.node, expires_at = excluded.expires_at"""
_EXTEND_LEASE = "UPDATE lease SET expires_at = %s WHERE id = 1"
_DROP_LEASE = "DELETE FROM lease WHERE id = 1 AND token = %s AND epoch = %s"

_CREATE_JOB = "INSERT INTO jobs (name, fingerprint, watermark, next_due) VALUES (%s, %s, %s, %s)"
_REDEFINE_JOB = """UPDATE jobs SET fingerprint = %(fp)s,
    watermark = greatest(coalesce(watermark, %(loaded)s), %(loaded)s), next_due = %(next)s
    WHERE name = %(name)s"""
_RESET_JOB = """UPDATE jobs SET fingerprint = %s, watermark = %s, last_slot = NULL, next_due = %s,
    paused = CASE WHEN paused = 1 THEN 1 ELSE 0 END, missed = greatest(missed, 0)
    WHERE name = %s"""
_TO_RETIRE = """SELECT name FROM jobs WHERE fingerprint != '' AND NOT (name = ANY(%s))
    ORDER BY name"""
_RETIRE_JOB = "UPDATE jobs SET fingerprint = '' WHERE name = %s"
# The jobs named in the first array, each with whether it has a live run, looked up only for
# those in the second.
_BATCH_JOBS = """SELECT name, fingerprint, watermark, last_slot, next_due, paused, missed,
    CASE WHEN name = ANY(%s) THEN EXISTS (SELECT 1 FROM runs WHERE runs.job = jobs.name)
        ELSE false END AS active
    FROM jobs WHERE name = ANY(%s)"""
_BATCH_JOB_STATES = f"SELECT {JOB_COLUMNS} FROM jobs WHERE name = ANY(%s)"
_ACTIVE_RUNS = "SELECT count(*) AS n FROM runs WHERE job = %s"
_NEWEST_LIVE_RUN = "SELECT run_id, state FROM runs WHERE job = %s ORDER BY seq DESC LIMIT 1"
_SET_PROGRESS = "UPDATE jobs SET watermark = %s, last_slot = %s, next_due = %s WHERE name = %s"
_SET_ADVANCED = "UPDATE jobs SET missed = %s, watermark = %s, next_due = %s WHERE name = %s"
_BATCH_GUARDS = """SELECT g.job, g.slot, g.expires_at
    FROM unnest(%s::text[], %s::bigint[]) AS wanted (job, slot)
    JOIN guards AS g ON g.job = wanted.job AND g.slot = wanted.slot"""
# A plain INSERT: the guard is the primary key, so a second guard of a slot cannot commit.
_INSERT_GUARD = "INSERT INTO guards (job, slot, expires_at) VALUES (%s, %s, %s)"
_PRUNE_GUARDS = """DELETE FROM guards WHERE (job, slot) IN
    (SELECT job, slot FROM guards WHERE expires_at <= %s LIMIT %s)"""
_INSERT_DISPATCHED_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest,
        epoch, attempt, max_attempts, created_at, not_before)
    VALUES (%s, %s, %s, 0, %s, %s, %s, %s, 0, %s, %s, %s)"""


# -- the lease -------------------------------------------------------------------------------------


def acquire(tx: Tx, node: str, token: str, ttl: timedelta) -> Lease | None:
    row = tx.one(LEASE)
    if row is not None and row["expires_at"] > tx.now:
        return _lease(row) if row["token"] == token else None
    bumped = tx.one(_BUMP_EPOCH)
    assert bumped is not None
    epoch = int(bumped["value"])
    expires_at = tx.now + micros(ttl)
    tx.run(_PUT_LEASE, (token, epoch, node, expires_at))
    return Lease(token=token, epoch=epoch, node=node, expires_at=from_micros(expires_at))


def renew(tx: Tx, lease: Lease, ttl: timedelta) -> Lease | None:
    if not _lease_is_current(tx, lease):
        return None
    expires_at = tx.now + micros(ttl)
    tx.run(_EXTEND_LEASE, (expires_at,))
    return Lease(
        token=lease.token, epoch=lease.epoch, node=lease.node, expires_at=from_micros(expires_at)
    )


def release(tx: Tx, lease: Lease) -> None:
    # Deleting our own row, expired or not, is always safe: a successor has a different token.
    tx.run(_DROP_LEASE, (lease.token, lease.epoch))


def holder(tx: Tx) -> LeaderInfo | None:
    row = tx.one(LEASE)
    if row is None or row["expires_at"] <= tx.now:
        return None
    return LeaderInfo(
        node=row["node"], epoch=int(row["epoch"]), expires_at=from_micros(row["expires_at"])
    )


def _lease(row: dict[str, Any]) -> Lease:
    return Lease(
        token=row["token"],
        epoch=int(row["epoch"]),
        node=row["node"],
        expires_at=from_micros(row["expires_at"]),
    )


def _lease_is_current(tx: Tx, lease: Lease) -> bool:
    row = tx.one(LEASE)
    return (
        row is not None
        and row["token"] == lease.token
        and row["epoch"] == lease.epoch
        and row["expires_at"] > tx.now
    )


def fence(tx: Tx, lease: Lease) -> None:
    """Refuse a leader write unless ``lease`` is current at store time (raising rolls back)."""
    if not _lease_is_current(tx, lease):
        row = tx.one(LEASE)
        held = None if row is None else (int(row["epoch"]), row["node"])
        raise Fenced(refusal(lease, held or (None, None)))


# -- jobs ------------------------------------------------------------------------------------------


def sync_jobs(tx: Tx, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime) -> list[JobState]:
    fence(tx, lease)
    loaded = to_micros(loaded_at)
    states: list[JobState] = []
    for job in jobs:
        next_due = None if job.next_due is None else to_micros(job.next_due)
        row = tx.one(JOB, (job.name,))
        if row is None:
            tx.run(_CREATE_JOB, (job.name, job.fingerprint, loaded, next_due))
        elif READ.job_problem(row) is not None:  # unreadable: start it afresh, as if new
            tx.run(_RESET_JOB, (job.fingerprint, loaded, next_due, job.name))
        elif row["fingerprint"] != job.fingerprint:
            params = {"fp": job.fingerprint, "loaded": loaded, "next": next_due, "name": job.name}
            tx.run(_REDEFINE_JOB, params)
        found = tx.one(JOB, (job.name,))
        assert found is not None
        states.append(READ.job(found))
    return states


def retire_jobs(tx: Tx, lease: Lease, keep: Sequence[str]) -> list[str]:
    fence(tx, lease)
    names = [row["name"] for row in tx.all(_TO_RETIRE, (list(keep),))]
    tx.many(_RETIRE_JOB, [(name,) for name in names])
    return names


# -- dispatch --------------------------------------------------------------------------------------


def dispatch(tx: Tx, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
    """Decide a batch in one transaction (see :meth:`PostgresStore.dispatch`)."""
    fence(tx, lease)
    plan = _DispatchPlan(epoch=lease.epoch, now=tx.now)
    jobs = _load_batch_jobs(tx, items, plan)
    results = [plan.decide(item, jobs.get(item.job)) for item in items]
    _explain_skips(tx, plan.unexplained)
    tx.many(_INSERT_GUARD, plan.guards)
    tx.many(_INSERT_DISPATCHED_RUN, plan.runs)
    tx.many(INSERT_HISTORY, plan.history)
    tx.many(
        _SET_PROGRESS,
        [
            (job.watermark, job.last_slot, job.next_due, name)
            for name, job in sorted(jobs.items())
            if job.dirty
        ],
    )
    trimmed = sorted({entry["job"] for entry in plan.history})
    tx.many(TRIM_HISTORY, [{"job": name, "keep": tx.keep} for name in trimmed])
    tx.run(_PRUNE_GUARDS, (tx.now, len(items) + GUARD_PRUNE_EXTRA))
    return results


def _load_batch_jobs(
    tx: Tx, items: Sequence[SlotDispatch], plan: _DispatchPlan
) -> dict[str, _BatchJob]:
    names = sorted({item.job for item in items})
    watched = sorted({item.job for item in items if item.overlap != "allow"})
    jobs = {
        row["name"]: _BatchJob(
            fingerprint=row["fingerprint"],
            watermark=row["watermark"],
            last_slot=row["last_slot"],
            next_due=row["next_due"],
            paused=bool(row["paused"]),
            active=bool(row["active"]),
            guards={},
        )
        for row in tx.all(_BATCH_JOBS, (watched, names))
        if READ.job_problem(row) is None
    }
    slots = [plan.instants[item.slot].micros for item in items]
    for row in tx.all(_BATCH_GUARDS, ([item.job for item in items], slots)):
        if row["job"] in jobs:
            jobs[row["job"]].guards[row["slot"]] = row["expires_at"]
    return jobs


def _explain_skips(tx: Tx, entries: Sequence[dict[str, Any]]) -> None:
    """Give each skipped entry its reason: the job's newest live run (created before the batch)."""
    reasons: dict[str, str] = {}
    for entry in entries:
        job = entry["job"]
        if job not in reasons:
            row = tx.one(_NEWEST_LIVE_RUN, (job,))
            reasons[job] = (
                overlap_reason(str(row["run_id"]), str(row["state"])) if row else "overlap = skip"
            )
        entry["error"] = reasons[job]


# -- missed slots ----------------------------------------------------------------------------------


def advance_many(tx: Tx, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
    """Record missed slots (see :meth:`PostgresStore.advance_many`)."""
    fence(tx, lease)
    names = sorted({item.job for item in items})
    rows = {row["name"]: dict(row) for row in tx.all(_BATCH_JOB_STATES, (names,))}
    for item in items:  # no state, nothing changes: the answer still counts its runs
        if item.job not in rows:
            found = tx.one(_ACTIVE_RUNS, (item.job,))
            active = 0 if found is None else int(found["n"])
            rows[item.job] = {**_NO_JOB, "name": item.job, "active": active}
    plan = _AdvancePlan(epoch=lease.epoch, now=tx.now, rows=rows)
    states = [plan.decide(item) for item in items]
    tx.many(INSERT_HISTORY, plan.entries)
    touched = sorted(plan.touched)
    tx.many(
        _SET_ADVANCED,
        [(rows[n]["missed"], rows[n]["watermark"], rows[n]["next_due"], n) for n in touched],
    )
    tx.many(TRIM_HISTORY, [{"job": name, "keep": tx.keep} for name in touched])
    return states
