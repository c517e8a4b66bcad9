""":class:`SQLiteStore`: the store contract on one SQLite file, each method one transaction.

The methods are thin: the connection and transactions are :class:`SQLiteConnection`'s, the
leader's writes are in :mod:`~chronod.store.sqlite.leader`, the workers' in
:mod:`~chronod.store.sqlite.queue`, decoding rows in :mod:`~chronod.store.sqlite.rows`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from chronod.clock import Clock
from chronod.instants import from_micros, to_micros
from chronod.store._common import SEEN_WINDOW, micros
from chronod.store.base import (
    AttemptResult,
    ChainLink,
    ChannelDelivery,
    Claim,
    DispatchResult,
    ExternalRun,
    FinishStatus,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    OutboxEvent,
    OutboxStats,
    Overlap,
    Presence,
    Quarantined,
    Role,
    RunRecord,
    SlotDispatch,
    Store,
    WorkerInfo,
)
from chronod.store.sqlite import leader as lead
from chronod.store.sqlite import queue as work
from chronod.store.sqlite.connection import DEFAULT_BUSY_TIMEOUT_MS, SQLiteConnection
from chronod.store.sqlite.external import SQLITE_EXTERNAL
from chronod.store.sqlite.outbox import SQLITE_OUTBOX
from chronod.store.sqlite.rows import JOB, JOB_COLUMNS, READ, RUN_COLUMNS, worker_info
from chronod.store.sqlite.schema import OUTBOX_SCHEMA, PRESENCE_SCHEMA

POLL_INTERVAL = 0.005  # seconds between cheap PRAGMA data_version checks in a blocking claim
SWEEP_EVERY = 60.0  # seconds between two looks (per store instance) for malformed live runs

_ALL_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY name"
_ENSURE_JOB = "INSERT OR IGNORE INTO jobs (name) VALUES (?)"
_SET_PAUSED = "UPDATE jobs SET paused = ?, watermark = ? WHERE name = ?"
_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
_LIVE_RUNS = f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at, seq"
_LIVE_RUNS_OF = f"SELECT {RUN_COLUMNS} FROM runs WHERE job = ? ORDER BY created_at, seq"
_QUEUE_DEPTHS = "SELECT queue, count(*) FROM runs WHERE state = 'queued' GROUP BY queue"
_HISTORY_COLUMNS = """seq, run_id, job, slot, manual, outcome, queue, digest, epoch, attempt,
    max_attempts, created_at, not_before, started_at, finished_at, worker, exit_code, output,
    error"""
_HISTORY = f"""SELECT {_HISTORY_COLUMNS} FROM history WHERE job = ?
    ORDER BY seq DESC LIMIT ?"""
_NEWEST_HISTORY_OF_RUN = f"""SELECT {_HISTORY_COLUMNS} FROM history WHERE run_id = ?
    ORDER BY seq DESC LIMIT 1"""
_PUT_WORKER = """INSERT OR REPLACE INTO workers (worker, queues, seen_at, running, concurrency)
    VALUES (?, ?, ?, ?, ?)"""
_FORGET_WORKERS = "DELETE FROM workers WHERE seen_at <= ?"
_WORKERS = """SELECT worker, queues, seen_at, running, concurrency FROM workers
    WHERE seen_at > ? ORDER BY seen_at DESC, worker"""
_PUT_PRESENCE = """INSERT OR REPLACE INTO presence (member, role, seen_at, stopped)
    VALUES (?, ?, ?, ?)"""
_FORGET_PRESENCE = "DELETE FROM presence WHERE seen_at <= ?"
_PRESENCE = """SELECT member, role, seen_at, stopped FROM presence
    WHERE seen_at > ? ORDER BY seen_at DESC, member"""


class _Seen(NamedTuple):
    """What a claim that found nothing saw, so that its wait can tell when to look again."""

    commits: int  # the instance's own commit count
    data_version: int  # PRAGMA data_version: moves when another connection commits
    wake_at: int | None  # earliest delayed run or attempt-lease expiry, microseconds


class SQLiteStore(SQLiteConnection, Store):
    """:class:`~chronod.store.base.Store` on one SQLite file (WAL): see the package docs."""

    def __init__(
        self,
        path: Path,
        *,
        history: int = 100,
        clock: Clock | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        create: bool = True,
    ) -> None:
        super().__init__(
            path, history=history, clock=clock, busy_timeout_ms=busy_timeout_ms, create=create
        )
        self._next_sweep = 0.0  # monotonic: when claim next looks for malformed live runs

    # -- clock -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock.now()

    # -- leader lease ------------------------------------------------------------------------------

    def acquire_lease(self, node: str, token: str, ttl: timedelta) -> Lease | None:
        with self._write() as tx:
            return lead.acquire(tx, node, token, ttl)

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        with self._write() as tx:
            return lead.renew(tx, lease, ttl)

    def release_lease(self, lease: Lease) -> None:
        with self._write() as tx:
            lead.release(tx, lease)

    def leader(self) -> LeaderInfo | None:
        with self._read() as conn:
            return lead.holder(conn, to_micros(self._clock.now()))

    # -- job state ---------------------------------------------------------------------------------

    def sync_jobs(
        self, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        with self._write() as tx:
            return lead.sync_jobs(tx, lease, jobs, loaded_at)

    def retire_jobs(self, lease: Lease, keep: Sequence[str]) -> list[str]:
        with self._write() as tx:
            return lead.retire_jobs(tx, lease, keep)

    def job_states(self) -> dict[str, JobState]:
        with self._read() as conn:
            return {row["name"]: READ.job(row) for row in conn.execute(_ALL_JOBS)}

    def set_paused(self, job: str, paused: bool) -> JobState:
        with self._write() as tx:
            tx.conn.execute(_ENSURE_JOB, (job,))
            row = tx.conn.execute(JOB, (job,)).fetchone()
            watermark = row["watermark"] if type(row["watermark"]) is int else None
            if row["paused"] and not paused:  # resuming: nothing from the paused period runs
                watermark = tx.now if watermark is None else max(watermark, tx.now)
            tx.conn.execute(_SET_PAUSED, (int(paused), watermark, job))
            return READ.job(tx.conn.execute(JOB, (job,)).fetchone())

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        """One transaction (one fsync) for the whole batch; each item is decided on its own.

        Under the write lock nothing else can change the batch's jobs and guards, so they are read
        once, every item is decided in order against that view (which each decision updates, so a
        slot repeated within the batch is a DUPLICATE), and the writes are applied in bulk.

        The guard is the ``guards`` primary key ``(job, slot)``: a slot's guard and its run commit
        together or not at all, so "guard exists" means "decided". Guards expire after
        ``guard_ttl`` and are pruned a bounded number at a time here; by then the watermark, moved
        to the slot by the same transaction that wrote the guard and never moved back, refuses the
        slot (STALE) on its own. Until then the guard is what tells a retry (DUPLICATE) from a slot
        that was never run (STALE).
        """
        with self._write() as tx:
            return lead.dispatch(tx, lease, items)

    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        """One transaction (one fsync) for the batch, its rows written in bulk.

        After an outage of a large installation every job has missed slots: one transaction per
        job kept the leader recording them for minutes. Under the write lock nothing else changes
        the batch's jobs, so they are read once, each item is decided in order against that view
        (which it updates: a job named twice sees its first item's effect), and the history
        entries, job rows and history trims are written with one statement each.
        """
        with self._write() as tx:
            return lead.advance_many(tx, lease, items)

    # -- manual runs -------------------------------------------------------------------------------

    def enqueue_manual(
        self, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        with self._write() as tx:
            return work.enqueue_manual(tx, job, queue, digest, overlap, max_attempts)

    # -- workers -----------------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta, wait: float
    ) -> Claim | None:
        """Claim in one ``BEGIN IMMEDIATE``; while nothing is ready, poll cheaply until ``wait``.

        Between attempts the loop only looks, every few milliseconds, at ``PRAGMA data_version``
        (which changes when another connection commits) and at this instance's own commit count
        (other threads sharing the connection), and claims again only when one of them changed or
        when the earliest delayed run or attempt lease it saw is due. Both are read inside the
        claim transaction, so a commit made just after it is never missed.
        """
        names = sorted(set(queues))
        deadline = self._clock.monotonic() + max(wait, 0.0)
        while True:
            claim, seen = self._claim_once(worker, names, token, ttl)
            if claim is not None or not self._wait_for_work(deadline, seen):
                return claim

    def _claim_once(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta
    ) -> tuple[Claim | None, _Seen]:
        with self._write() as tx:
            seen = _Seen(self._commits, 0, None)
            claim = work.repeated_claim(tx, token)  # a retried claim: the same claim again
            if claim is not None:
                return claim, seen
            work.reap(tx)
            if self._clock.monotonic() >= self._next_sweep:
                self._next_sweep = self._clock.monotonic() + SWEEP_EVERY
                work.sweep(tx)
            claim = work.claim_oldest(tx, queues, worker, token, ttl)
            if claim is not None:
                return claim, seen
            version = int(tx.conn.execute("PRAGMA data_version").fetchone()[0])
            return None, _Seen(self._commits, version, work.next_wake(tx, queues))

    def _wait_for_work(self, deadline: float, seen: _Seen) -> bool:
        """Sleep until something may have become claimable (True) or the deadline passed."""
        while True:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            if self._clock.wait(self._closed, min(POLL_INTERVAL, remaining)):
                return False  # closed meanwhile
            if seen.wake_at is not None and to_micros(self._clock.now()) >= seen.wake_at:
                return True
            with self._read() as conn:
                if self._commits != seen.commits:
                    return True
                if conn.execute("PRAGMA data_version").fetchone()[0] != seen.data_version:
                    return True

    def drain_quarantined(self) -> list[Quarantined]:
        with self._lock:
            found, self._quarantined = self._quarantined, []
        return found

    def heartbeat(self, run_id: str, token: str, ttl: timedelta) -> bool:
        with self._write() as tx:
            return work.heartbeat(tx, run_id, token, ttl)

    def finish(self, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        with self._write() as tx:
            return work.finish(tx, run_id, token, result)

    def begin_external(self, run: ExternalRun) -> bool:
        with self._write() as tx:
            return SQLITE_EXTERNAL.begin(tx, run)

    def end_external(self, run: ExternalRun, result: AttemptResult) -> bool:
        with self._write() as tx:
            return SQLITE_EXTERNAL.end(tx, run, result)

    def hand_back(self, run_id: str, token: str) -> bool:
        with self._write() as tx:
            return work.hand_back(tx, run_id, token)

    def reap(self) -> list[str]:
        with self._write() as tx:
            return work.reap(tx)

    def register_worker(self, info: WorkerInfo) -> None:
        # seen_at is store time: the caller's clock is never trusted for liveness.
        with self._write() as tx:
            tx.conn.execute(_FORGET_WORKERS, (tx.now - micros(SEEN_WINDOW),))
            queues = json.dumps(list(info.queues))
            tx.conn.execute(
                _PUT_WORKER, (info.worker, queues, tx.now, info.running, info.concurrency)
            )

    def workers(self) -> list[WorkerInfo]:
        with self._read() as conn:
            since = to_micros(self._clock.now()) - micros(SEEN_WINDOW)
            found = [worker_info(row) for row in conn.execute(_WORKERS, (since,))]
            return [info for info in found if info is not None]

    # -- presence ----------------------------------------------------------------------------------

    def announce(self, member: str, role: Role, *, stopped: bool = False) -> None:
        with self._write() as tx:
            tx.conn.execute(_FORGET_PRESENCE, (tx.now - micros(SEEN_WINDOW),))
            tx.conn.execute(_PUT_PRESENCE, (member, role, tx.now, int(stopped)))

    def presences(self) -> list[Presence]:
        with self._read() as conn:
            if self._schema < PRESENCE_SCHEMA:  # opened as found, written by an older chronod
                return []
            since = to_micros(self._clock.now()) - micros(SEEN_WINDOW)
            return [
                Presence(
                    member=row["member"],
                    role=row["role"],
                    seen_at=from_micros(row["seen_at"]),
                    stopped=bool(row["stopped"]),
                )
                for row in conn.execute(_PRESENCE, (since,))
            ]

    # -- outbox ------------------------------------------------------------------------------------

    def set_chains(self, lease: Lease, links: Sequence[ChainLink]) -> None:
        with self._write() as tx:
            lead.fence(tx, lease)
            work.SQLITE_CHAINS.set_links(tx, links, lease.epoch)

    def set_event_kinds(self, lease: Lease, kinds: Mapping[str, frozenset[str]]) -> None:
        with self._write() as tx:
            lead.fence(tx, lease)
            SQLITE_OUTBOX.set_kinds(tx, kinds)

    def events_due(self, limit: int) -> list[OutboxEvent]:
        with self._read() as conn:
            if self._schema < OUTBOX_SCHEMA:  # opened as found, written by an older chronod
                return []
            return SQLITE_OUTBOX.due(conn, self._clock.now(), limit)

    def settle_event(
        self, event_id: str, attempts: int, done: Sequence[str], retry_at: datetime | None
    ) -> bool:
        with self._write() as tx:
            return SQLITE_OUTBOX.settle(tx, event_id, attempts, done, retry_at)

    def outbox_stats(self) -> OutboxStats:
        with self._read() as conn:
            if self._schema < OUTBOX_SCHEMA:
                return OutboxStats(depth=0, dropped=0)
            return SQLITE_OUTBOX.stats(conn)

    def note_delivery(self, channel: str, error: str | None) -> None:
        with self._write() as tx:
            SQLITE_OUTBOX.note_delivery(tx, channel, error)

    def deliveries(self) -> list[ChannelDelivery]:
        with self._read() as conn:
            if self._schema < OUTBOX_SCHEMA:
                return []
            return SQLITE_OUTBOX.deliveries(conn)

    # -- reading -----------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord | None:
        with self._snapshot() as conn:
            live = conn.execute(_RUN, (run_id,)).fetchone()
            if live is not None:
                return READ.readable(live, ended=False)
            ended = conn.execute(_NEWEST_HISTORY_OF_RUN, (run_id,)).fetchone()
            return None if ended is None else READ.readable(ended, ended=True)

    def live_runs(self, job: str | None = None) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(_LIVE_RUNS) if job is None else conn.execute(_LIVE_RUNS_OF, (job,))
            return [READ.readable(row, ended=False) for row in rows]

    def history(self, job: str, limit: int) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(_HISTORY, (job, max(limit, 0)))
            return [READ.readable(row, ended=True) for row in rows]

    def queue_depths(self) -> dict[str, int]:
        with self._read() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(_QUEUE_DEPTHS)}
