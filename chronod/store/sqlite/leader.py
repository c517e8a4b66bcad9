"""The leader's side of the SQL stores: the lease, and the writes it fences (loading jobs,
retiring them, dispatching slots, recording missed ones). Each method of :class:`Leader` runs
inside the caller's write transaction (here :class:`~chronod.store.sqlite.connection.Tx`); the
rules are written once, over one SQL dialect's statements (:class:`LeaderSQL`): SQLite's below,
PostgreSQL's in :mod:`chronod.store.postgres.leader`.

The dispatch and missed-slot rules here are the same as ``dispatch.lua`` and ``advance.lua`` of the
Redis store; ``tests/test_store_stateful.py`` drives both with the same operations.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chronod.instants import from_micros, slot_id, to_micros
from chronod.store._common import NAMED, InstantMemo, micros, refusal
from chronod.store.base import (
    DispatchResult,
    DispatchStatus,
    Fenced,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    Outcome,
    RunState,
    SlotDispatch,
    overlap_reason,
    superseded_reason,
)
from chronod.store.sqlite.outbox import SQLITE_OUTBOX, Outbox
from chronod.store.sqlite.queue import QueueTx
from chronod.store.sqlite.rows import (
    INSERT_HISTORY,
    JOB,
    JOB_COLUMNS,
    READ,
    TRIM_HISTORY,
    history_entry,
)

GUARD_PRUNE_EXTRA = 64  # expired guards deleted per dispatch batch, beyond one per item

LEASE = "SELECT token, epoch, node, expires_at FROM lease WHERE id = 1"
_BUMP_EPOCH = "UPDATE counters SET value = value + 1 WHERE name = 'epoch'"
_EPOCH = "SELECT value FROM counters WHERE name = 'epoch'"
_PUT_LEASE = """INSERT OR REPLACE INTO lease (id, token, epoch, node, expires_at)
    VALUES (1, ?, ?, ?, ?)"""
_EXTEND_LEASE = "UPDATE lease SET expires_at = ? WHERE id = 1"
_DROP_LEASE = "DELETE FROM lease WHERE id = 1 AND token = ? AND epoch = ?"

_CREATE_JOB = """INSERT INTO jobs (name, fingerprint, watermark, next_due)
    VALUES (?, ?, ?, ?)"""
_REDEFINE_JOB = """UPDATE jobs SET fingerprint = ?, watermark = max(coalesce(watermark, ?), ?),
    next_due = ? WHERE name = ?"""
_RESET_JOB = """UPDATE jobs SET fingerprint = ?, watermark = ?, last_slot = NULL, next_due = ?,
    paused = (paused IS 1), missed = CASE WHEN typeof(missed) = 'integer' THEN missed ELSE 0 END
    WHERE name = ?"""
_TO_RETIRE = """SELECT name FROM jobs
    WHERE fingerprint != '' AND name NOT IN (SELECT value FROM json_each(?)) ORDER BY name"""
_RETIRE_JOB = "UPDATE jobs SET fingerprint = '' WHERE name = ?"
# The jobs named in ?1, each with whether it has a live run, looked up only for those in ?2.
_BATCH_JOBS = """SELECT name, fingerprint, watermark, last_slot, next_due, paused,
    CASE WHEN name IN (SELECT value FROM json_each(?2))
        THEN EXISTS (SELECT 1 FROM runs WHERE runs.job = jobs.name) ELSE 0 END AS active, missed
    FROM jobs WHERE name IN (SELECT value FROM json_each(?1))"""
_BATCH_JOB_STATES = f"""SELECT {JOB_COLUMNS} FROM jobs
    WHERE name IN (SELECT value FROM json_each(?))"""
# The columns of a job without state, as a row would hold them (name and active to be added).
_NO_JOB: dict[str, Any] = {
    "fingerprint": "",
    "watermark": None,
    "last_slot": None,
    "next_due": None,
    "paused": 0,
    "last_outcome": None,
    "last_outcome_at": None,
    "last_success_at": None,
    "missed": 0,
}
_ACTIVE_RUNS = "SELECT COUNT(*) AS n FROM runs WHERE job = ?"
_NEWEST_LIVE_RUN = "SELECT run_id, state FROM runs WHERE job = ? ORDER BY seq DESC LIMIT 1"
_SET_PROGRESS = "UPDATE jobs SET watermark = ?, last_slot = ?, next_due = ? WHERE name = ?"
_SET_ADVANCED = "UPDATE jobs SET missed = ?, watermark = ?, next_due = ? WHERE name = ?"

# Which (job, slot) pairs of a batch (a JSON list of [job, slot]) are guarded, and until when: one
# PK probe each.
_BATCH_GUARDS = """SELECT g.job, g.slot, g.expires_at FROM json_each(?) AS wanted
    JOIN guards AS g ON g.job = json_extract(wanted.value, '$[0]')
        AND g.slot = json_extract(wanted.value, '$[1]')"""
# A plain INSERT: the batch checked the guards under the same write lock, so a conflict here would
# be a bug, and it must fail loudly (rolling the batch back) rather than be ignored.
_INSERT_GUARD = "INSERT INTO guards (job, slot, expires_at) VALUES (?, ?, ?)"
_PRUNE_GUARDS = """DELETE FROM guards WHERE (job, slot) IN
    (SELECT job, slot FROM guards WHERE expires_at <= ? LIMIT ?)"""
# The runs one dispatch batch creates, positional (cheaper to bind).
_INSERT_DISPATCHED_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest,
        epoch, attempt, max_attempts, created_at, not_before)
    VALUES (?, ?, ?, 0, ?, ?, ?, ?, 0, ?, ?, ?)"""


@dataclass(frozen=True, kw_only=True)
class LeaderSQL:
    """The statements of :class:`Leader` in one SQL dialect: parameters as SQLite's statements
    take them (lists of names, and the batch's (job, slot) pairs, as JSON text); rows read by
    column name."""

    lease: str
    bump_epoch: str
    epoch: str  # ... value
    put_lease: str
    extend_lease: str
    drop_lease: str
    job: str  # the job row with its active count (rows.JOB)
    create_job: str
    redefine_job: str
    reset_job: str
    to_retire: str
    retire_job: str
    batch_jobs: str
    batch_job_states: str
    active_runs: str  # ... AS n
    newest_live_run: str
    set_progress: str
    set_advanced: str
    batch_guards: str
    insert_guard: str
    prune_guards: str
    insert_dispatched_run: str
    insert_history: str
    trim_history: str


SQLITE_SQL = LeaderSQL(
    lease=LEASE,
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
)


def many(tx: QueueTx, query: str, rows: Sequence[Any]) -> None:
    """``executemany`` through a cursor (DB-API: both drivers have it), nothing for no rows."""
    if rows:
        tx.conn.cursor().executemany(query, rows)


@dataclass(frozen=True)
class Leader:
    """The leader's rules over the statements ``sql``; missed slots append their events to
    ``outbox`` in the same transaction."""

    sql: LeaderSQL
    outbox: Outbox

    # -- the lease ---------------------------------------------------------------------------------

    def acquire(self, tx: QueueTx, node: str, token: str, ttl: timedelta) -> Lease | None:
        row = lease_row(tx.conn.execute(self.sql.lease).fetchone())
        if row is not None and row["expires_at"] > tx.now:
            return _lease(row) if row["token"] == token else None
        tx.conn.execute(self.sql.bump_epoch)
        epoch = int(tx.conn.execute(self.sql.epoch).fetchone()["value"])
        expires_at = tx.now + micros(ttl)
        tx.conn.execute(self.sql.put_lease, (token, epoch, node, expires_at))
        return Lease(token=token, epoch=epoch, node=node, expires_at=from_micros(expires_at))

    def renew(self, tx: QueueTx, lease: Lease, ttl: timedelta) -> Lease | None:
        if not self._lease_is_current(tx, lease):
            return None
        expires_at = tx.now + micros(ttl)
        tx.conn.execute(self.sql.extend_lease, (expires_at,))
        return Lease(
            token=lease.token,
            epoch=lease.epoch,
            node=lease.node,
            expires_at=from_micros(expires_at),
        )

    def release(self, tx: QueueTx, lease: Lease) -> None:
        # Deleting our own row, expired or not, is always safe: a successor has a different token.
        tx.conn.execute(self.sql.drop_lease, (lease.token, lease.epoch))

    def holder(self, conn: Any, now: int) -> LeaderInfo | None:
        """The unexpired lease at store time ``now``, if any."""
        row = lease_row(conn.execute(self.sql.lease).fetchone())
        if row is None or row["expires_at"] <= now:
            return None
        return LeaderInfo(
            node=row["node"], epoch=row["epoch"], expires_at=from_micros(row["expires_at"])
        )

    def _lease_is_current(self, tx: QueueTx, lease: Lease) -> bool:
        row = lease_row(tx.conn.execute(self.sql.lease).fetchone())
        return (
            row is not None
            and row["token"] == lease.token
            and row["epoch"] == lease.epoch
            and row["expires_at"] > tx.now
        )

    def fence(self, tx: QueueTx, lease: Lease) -> None:
        """Refuse a leader write unless ``lease`` is current at store time (raising rolls back)."""
        if not self._lease_is_current(tx, lease):
            raise Fenced(refusal(lease))

    # -- jobs --------------------------------------------------------------------------------------

    def sync_jobs(
        self, tx: QueueTx, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        self.fence(tx, lease)
        loaded = to_micros(loaded_at)
        states: list[JobState] = []
        for job in jobs:
            next_due = None if job.next_due is None else to_micros(job.next_due)
            row = tx.conn.execute(self.sql.job, (job.name,)).fetchone()
            if row is None:
                tx.conn.execute(self.sql.create_job, (job.name, job.fingerprint, loaded, next_due))
            elif READ.job_problem(row) is not None:  # unreadable: start it afresh, as if new
                tx.conn.execute(self.sql.reset_job, (job.fingerprint, loaded, next_due, job.name))
            elif row["fingerprint"] != job.fingerprint:
                tx.conn.execute(
                    self.sql.redefine_job, (job.fingerprint, loaded, loaded, next_due, job.name)
                )
            states.append(READ.job(tx.conn.execute(self.sql.job, (job.name,)).fetchone()))
        return states

    def retire_jobs(self, tx: QueueTx, lease: Lease, keep: Sequence[str]) -> list[str]:
        self.fence(tx, lease)
        keep_json = json.dumps(list(keep))
        names = [row["name"] for row in tx.conn.execute(self.sql.to_retire, (keep_json,))]
        many(tx, self.sql.retire_job, [(name,) for name in names])
        return names

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(
        self, tx: QueueTx, lease: Lease, items: Sequence[SlotDispatch]
    ) -> list[DispatchResult]:
        """Decide a batch (see :meth:`~chronod.store.sqlite.SQLiteStore.dispatch`)."""
        self.fence(tx, lease)  # the lock is held for the whole batch: one check covers every item
        plan = _DispatchPlan(epoch=lease.epoch, now=tx.now)
        jobs = self._load_batch_jobs(tx, items, plan)
        results = [plan.decide(item, jobs.get(item.job)) for item in items]
        self._explain_skips(tx, plan.unexplained)
        many(tx, self.sql.insert_guard, plan.guards)
        many(tx, self.sql.insert_dispatched_run, plan.runs)
        many(tx, self.sql.insert_history, plan.history)
        many(
            tx,
            self.sql.set_progress,
            [
                (job.watermark, job.last_slot, job.next_due, name)
                for name, job in jobs.items()
                if job.dirty
            ],
        )
        trimmed = sorted({entry["job"] for entry in plan.history})
        many(tx, self.sql.trim_history, [{"job": name, "keep": tx.keep} for name in trimmed])
        tx.conn.execute(self.sql.prune_guards, (tx.now, len(items) + GUARD_PRUNE_EXTRA))
        return results

    def _load_batch_jobs(
        self, tx: QueueTx, items: Sequence[SlotDispatch], plan: _DispatchPlan
    ) -> dict[str, _BatchJob]:
        """The batch's stored jobs, each with those of the batch's slots that are already guarded.

        ``active`` (does the job have a live run) is looked up only for jobs with an item whose
        overlap is not ``allow``: nothing else reads it, and it is an index probe per job.
        """
        names = json.dumps(sorted({item.job for item in items}))
        watched = json.dumps(sorted({item.job for item in items if item.overlap != "allow"}))
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
            for row in tx.conn.execute(self.sql.batch_jobs, (names, watched))
            # A malformed row is left out: its items answer UNKNOWN_JOB and the leader re-syncs the
            # job, which rewrites the row (sync_jobs).
            if READ.job_problem(row) is None
        }
        wanted = json.dumps([[item.job, plan.instants[item.slot].micros] for item in items])
        for guard in tx.conn.execute(self.sql.batch_guards, (wanted,)):
            name, slot, expires_at = guard["job"], guard["slot"], guard["expires_at"]
            if name in jobs:
                jobs[name].guards[slot] = expires_at
        return jobs

    def _explain_skips(self, tx: QueueTx, entries: Sequence[dict[str, Any]]) -> None:
        """Give each skipped entry its reason: the job's newest live run (created before the
        batch)."""
        reasons: dict[str, str] = {}
        for entry in entries:
            job = entry["job"]
            if job not in reasons:
                row = tx.conn.execute(self.sql.newest_live_run, (job,)).fetchone()
                reasons[job] = (
                    overlap_reason(str(row["run_id"]), str(row["state"]))
                    if row
                    else "overlap = skip"
                )
            entry["error"] = reasons[job]

    # -- missed slots ------------------------------------------------------------------------------

    def advance_many(
        self, tx: QueueTx, lease: Lease, items: Sequence[MissedSlots]
    ) -> list[JobState]:
        """Record missed slots (see :meth:`~chronod.store.sqlite.SQLiteStore.advance_many`)."""
        self.fence(tx, lease)  # the lock is held for the whole batch: one check covers every item
        names = json.dumps(sorted({item.job for item in items}))
        rows = {
            row["name"]: dict(row) for row in tx.conn.execute(self.sql.batch_job_states, (names,))
        }
        for item in items:  # no state, nothing changes: the answer still counts its runs
            if item.job not in rows:
                active = tx.conn.execute(self.sql.active_runs, (item.job,)).fetchone()["n"]
                rows[item.job] = {**_NO_JOB, "name": item.job, "active": active}
        plan = _AdvancePlan(epoch=lease.epoch, now=tx.now, rows=rows)
        states = [plan.decide(item) for item in items]
        many(tx, self.sql.insert_history, plan.entries)
        for entry in plan.entries:  # a missed slot is news too, for a job that asks (the outbox)
            self.outbox.append(tx, entry, None)
        many(
            tx,
            self.sql.set_advanced,
            [
                (rows[n]["missed"], rows[n]["watermark"], rows[n]["next_due"], n)
                for n in plan.touched
            ],
        )
        many(tx, self.sql.trim_history, [{"job": name, "keep": tx.keep} for name in plan.touched])
        return states


def lease_row(row: sqlite3.Row | None) -> sqlite3.Row | None:
    """The lease row, or None if there is none or it is malformed (then it counts as expired, and
    the next acquisition replaces it)."""
    if row is None:
        return None
    fields = (row["token"], row["epoch"], row["node"], row["expires_at"])
    if [type(value) for value in fields] != [str, int, str, int]:
        return None
    return row


def _lease(row: sqlite3.Row) -> Lease:
    return Lease(
        token=row["token"],
        epoch=int(row["epoch"]),
        node=row["node"],
        expires_at=from_micros(row["expires_at"]),
    )


@dataclass
class _BatchJob:
    """A job's row as one dispatch batch sees and changes it (written back once per batch)."""

    fingerprint: str
    watermark: int | None
    last_slot: int | None
    next_due: int | None
    paused: bool
    active: bool
    guards: dict[int, int]  # those of the batch's slots of this job that are guarded: expiry
    dirty: bool = False
    # Why a slot of this job is skipped for overlap, once this batch created its active run.
    active_reason: str | None = None


@dataclass
class _DispatchPlan:
    """Decides the items of one dispatch batch in order and collects the rows to write."""

    epoch: int
    now: int
    guards: list[tuple[str, int, int]] = field(default_factory=list)
    runs: list[tuple[Any, ...]] = field(default_factory=list)  # _INSERT_DISPATCHED_RUN rows
    history: list[dict[str, Any]] = field(default_factory=list)
    # Skipped entries whose reason names the job's active run from before this batch: filled in
    # by _explain_skips with one lookup per job (skips are rare; the hot path pays nothing).
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    decided_at: datetime = field(init=False)
    instants: InstantMemo = field(default_factory=InstantMemo)

    def __post_init__(self) -> None:
        self.decided_at = from_micros(self.now)

    def decide(self, item: SlotDispatch, job: _BatchJob | None) -> DispatchResult:
        slot = self.instants[item.slot]
        run_id = f"{item.job}@{slot.iso}"  # instants.slot_id, with the formatting memoized
        status = self._status(item, job, slot.micros, run_id)
        decided_at = self.decided_at
        if status is DispatchStatus.DUPLICATE and job is not None:
            # When the slot was first decided: its guard was written to expire guard_ttl later
            # (a retried batch carries the same guard_ttl), so a repeat answers as the first did.
            expiry = job.guards[slot.micros]
            first = expiry - micros(item.guard_ttl) if type(expiry) is int else self.now
            decided_at = from_micros(min(first, self.now))
        return DispatchResult(
            status=status,
            run_id=run_id if status in NAMED else None,
            dispatched_at=decided_at,
        )

    def _status(
        self, item: SlotDispatch, job: _BatchJob | None, slot: int, run_id: str
    ) -> DispatchStatus:
        if job is None or not job.fingerprint or job.fingerprint != item.fingerprint:
            return DispatchStatus.UNKNOWN_JOB
        if slot > self.now:
            return DispatchStatus.EARLY
        if slot in job.guards:
            return DispatchStatus.DUPLICATE
        if job.watermark is not None and slot <= job.watermark:
            return DispatchStatus.STALE
        expires_at = self.now + micros(item.guard_ttl)
        job.guards[slot] = expires_at
        self.guards.append((item.job, slot, expires_at))
        job.watermark = slot
        job.next_due = None if item.next_due is None else self.instants[item.next_due].micros
        job.dirty = True
        if job.paused:
            return DispatchStatus.PAUSED
        if item.superseded_by is not None or (job.active and item.overlap == "skip"):
            self._skip(item, job, slot, run_id)
            return DispatchStatus.SKIPPED
        waiting = job.active and item.overlap == "queue"
        state = RunState.WAITING if waiting else RunState.QUEUED
        self.runs.append(
            (
                run_id,
                item.job,
                slot,
                state.value,
                item.queue,
                item.digest,
                self.epoch,
                item.max_attempts,
                self.now,
                slot,
            )
        )
        job.active = True
        job.active_reason = overlap_reason(run_id, state.value)
        job.last_slot = slot
        return DispatchStatus.WAITING if waiting else DispatchStatus.QUEUED

    def _skip(self, item: SlotDispatch, job: _BatchJob, slot: int, run_id: str) -> None:
        """Record ``slot`` as skipped: superseded by a newer slot, or behind an active run."""
        run = {
            "run_id": run_id,
            "job": item.job,
            "slot": slot,
            "manual": 0,
            "queue": item.queue,
            "digest": item.digest,
            "epoch": self.epoch,
            "attempt": 0,
            "max_attempts": item.max_attempts,
            "created_at": self.now,
            "not_before": slot,
        }
        reason = job.active_reason
        if item.superseded_by is not None:
            reason = superseded_reason(item.superseded_by)
        entry = history_entry(run, Outcome.SKIPPED, self.now, error=reason)
        self.history.append(entry)
        if reason is None:
            self.unexplained.append(entry)


@dataclass
class _AdvancePlan:
    """Decides the items of one advance batch in order against the batch's job ``rows``, which
    it updates (a job named twice sees its first item's effect), and collects what to write."""

    epoch: int
    now: int
    rows: dict[str, dict[str, Any]]
    entries: list[dict[str, Any]] = field(default_factory=list)  # INSERT_HISTORY parameters
    touched: set[str] = field(default_factory=set)  # jobs whose fingerprint matched: rows change

    def decide(self, item: MissedSlots) -> JobState:
        job = item.job
        row = self.rows[job]
        if not row["fingerprint"] or row["fingerprint"] != item.fingerprint:
            return READ.job(row)
        if READ.job_problem(row) is not None:  # the leader re-syncs it (see _load_batch_jobs)
            return READ.job(row)
        watermark: int | None = row["watermark"]
        recorded = 0
        for slot in sorted(item.missed):
            at = to_micros(slot)
            if watermark is None or at > watermark:
                self.entries.append(self._missed(job, slot))
                watermark = at
                recorded += 1
        # A client retry finds every named slot at or below the watermark the first call set:
        # it records nothing and must not count them again. (A call naming no slot cannot be
        # told from its repeat; it counts.)
        counted = item.missed_count if recorded or not item.missed else 0
        self.touched.add(job)
        row["missed"] += counted
        row["watermark"] = watermark
        row["next_due"] = None if item.next_due is None else to_micros(item.next_due)
        return READ.job(row)

    def _missed(self, job: str, slot: datetime) -> dict[str, Any]:
        """The INSERT_HISTORY parameters of a missed slot.

        advance() is not told the job's queue, digest or attempts: those stay empty.
        """
        at = to_micros(slot)
        run = {
            "run_id": slot_id(job, slot),
            "job": job,
            "slot": at,
            "manual": 0,
            "queue": "",
            "digest": "",
            "epoch": self.epoch,
            "attempt": 0,
            "max_attempts": 0,
            "created_at": self.now,
            "not_before": at,
        }
        return history_entry(run, Outcome.MISSED, self.now)


# The SQLite store's leader side, and its methods as this module's functions.
SQLITE_LEADER = Leader(SQLITE_SQL, SQLITE_OUTBOX)
acquire = SQLITE_LEADER.acquire
renew = SQLITE_LEADER.renew
release = SQLITE_LEADER.release
holder = SQLITE_LEADER.holder
fence = SQLITE_LEADER.fence
sync_jobs = SQLITE_LEADER.sync_jobs
retire_jobs = SQLITE_LEADER.retire_jobs
dispatch = SQLITE_LEADER.dispatch
advance_many = SQLITE_LEADER.advance_many
