""":class:`PostgresStore`: the store contract on a PostgreSQL schema, each method one transaction.

The methods are thin: connections, transactions and errors are :class:`PostgresConnection`'s, the
leader's writes are in :mod:`~chronod.store.postgres.leader`, the workers' in
:mod:`~chronod.store.postgres.queue`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from chronod.instants import from_micros
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
from chronod.store.postgres.connection import LISTEN_SLICE, PostgresConnection, Tx
from chronod.store.postgres.leader import POSTGRES_LEADER as lead
from chronod.store.postgres.queue import POSTGRES_QUEUE as work
from chronod.store.postgres.queue import NeedsQuarantine
from chronod.store.postgres.rows import JOB, JOB_COLUMNS, RUN_COLUMNS
from chronod.store.postgres.schema import OUTBOX_SCHEMA
from chronod.store.postgres.url import parse_postgres_url
from chronod.store.sqlite.external import External
from chronod.store.sqlite.outbox import POSTGRES_OUTBOX as outbox
from chronod.store.sqlite.rows import READ, worker_info

EXTERNAL = External("%s", work)  # runs executed by another system (Celery)
SWEEP_EVERY = 60.0  # seconds between two looks (per store instance) for malformed live runs

_EXPIRED = (
    "SELECT 1 AS expired FROM runs WHERE state = 'running' AND lease_expires_at <= %s LIMIT 1"
)
_ALL_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY name"
_ENSURE_JOB = "INSERT INTO jobs (name) VALUES (%s) ON CONFLICT DO NOTHING"
_SET_PAUSED = "UPDATE jobs SET paused = %s, watermark = %s WHERE name = %s"
_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s"
_LIVE_RUNS = f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at, seq"
_LIVE_RUNS_OF = f"SELECT {RUN_COLUMNS} FROM runs WHERE job = %s ORDER BY created_at, seq"
_QUEUE_DEPTHS = "SELECT queue, count(*) AS n FROM runs WHERE state = 'queued' GROUP BY queue"
_HISTORY_COLUMNS = """seq, run_id, job, slot, manual, outcome, queue, digest, epoch, attempt,
    max_attempts, created_at, not_before, started_at, finished_at, worker, exit_code, output,
    error"""
_HISTORY = f"SELECT {_HISTORY_COLUMNS} FROM history WHERE job = %s ORDER BY seq DESC LIMIT %s"
_NEWEST_HISTORY_OF_RUN = f"""SELECT {_HISTORY_COLUMNS} FROM history WHERE run_id = %s
    ORDER BY seq DESC LIMIT 1"""
_PUT_WORKER = """INSERT INTO workers (worker, queues, seen_at, running, concurrency)
    VALUES (%s, %s, %s, %s, %s) ON CONFLICT (worker) DO UPDATE SET queues = excluded.queues,
        seen_at = excluded.seen_at, running = excluded.running,
        concurrency = excluded.concurrency"""
_FORGET_WORKERS = "DELETE FROM workers WHERE seen_at <= %s"
_WORKERS = """SELECT worker, queues, seen_at, running, concurrency FROM workers
    WHERE seen_at > %s ORDER BY seen_at DESC, worker"""
_PUT_PRESENCE = """INSERT INTO presence (member, role, seen_at, stopped) VALUES (%s, %s, %s, %s)
    ON CONFLICT (member) DO UPDATE SET role = excluded.role, seen_at = excluded.seen_at,
        stopped = excluded.stopped"""
_FORGET_PRESENCE = "DELETE FROM presence WHERE seen_at <= %s"
_PRESENCE = """SELECT member, role, seen_at, stopped FROM presence
    WHERE seen_at > %s ORDER BY seen_at DESC, member"""


class PostgresStore(PostgresConnection, Store):
    """:class:`~chronod.store.base.Store` on a PostgreSQL schema: see docs/postgres.md."""

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str = "chronod", history: int = 100, create: bool = True
    ) -> PostgresStore:
        return cls(parse_postgres_url(url, namespace), history=history, create=create)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_sweep = 0.0  # monotonic: when claim next looks for malformed live runs

    # -- clock -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return from_micros(self._transact(lambda tx: tx.now, schema=False))

    # -- leader lease ------------------------------------------------------------------------------

    def acquire_lease(self, node: str, token: str, ttl: timedelta) -> Lease | None:
        return self._transact(lambda tx: lead.acquire(tx, node, token, ttl))

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        return self._transact(lambda tx: lead.renew(tx, lease, ttl))

    def release_lease(self, lease: Lease) -> None:
        self._transact(lambda tx: lead.release(tx, lease))

    def leader(self) -> LeaderInfo | None:
        return self._transact(lambda tx: lead.holder(tx.conn, tx.now))

    # -- job state ---------------------------------------------------------------------------------

    def sync_jobs(
        self, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        return self._transact(lambda tx: lead.sync_jobs(tx, lease, jobs, loaded_at))

    def retire_jobs(self, lease: Lease, keep: Sequence[str]) -> list[str]:
        return self._transact(lambda tx: lead.retire_jobs(tx, lease, keep))

    def job_states(self) -> dict[str, JobState]:
        return self._transact(lambda tx: {r["name"]: READ.job(r) for r in tx.all(_ALL_JOBS)})

    def set_paused(self, job: str, paused: bool) -> JobState:
        def body(tx: Tx) -> JobState:
            tx.run(_ENSURE_JOB, (job,))
            row = tx.one(JOB, (job,))
            assert row is not None
            watermark = row["watermark"]
            if row["paused"] and not paused:  # resuming: nothing from the paused period runs
                watermark = tx.now if watermark is None else max(watermark, tx.now)
            tx.run(_SET_PAUSED, (int(paused), watermark, job))
            found = tx.one(JOB, (job,))
            assert found is not None
            return READ.job(found)

        return self._transact(body)

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        """One transaction for the whole batch, each item decided on its own (as SQLite's).

        The guard is the ``guards`` primary key: the slot's guard, its run and the watermark
        commit together or not at all, so "guard exists" means "decided". The commit notifies
        waiting workers.
        """
        return self._transact(lambda tx: lead.dispatch(tx, lease, items), notify=True)

    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        """One transaction for the batch (after an outage every job may have missed slots)."""
        return self._transact(lambda tx: lead.advance_many(tx, lease, items))

    # -- manual runs -------------------------------------------------------------------------------

    def enqueue_manual(
        self, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        return self._transact(
            lambda tx: work.enqueue_manual(tx, job, queue, digest, overlap, max_attempts),
            notify=True,
        )

    # -- workers -----------------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta, wait: float
    ) -> Claim | None:
        """Claim in one READ COMMITTED transaction; while nothing is ready, wait for a
        notification.

        The one transaction that is not SERIALIZABLE, because ``FOR UPDATE SKIP LOCKED`` is only
        a queue at READ COMMITTED: at SERIALIZABLE, a run another worker claimed after this
        transaction's snapshot fails the whole transaction instead of being skipped, and two
        workers conflicted on about one claim in three. It is safe here because what a claim
        writes (a queued run becomes running, with this attempt's token and lease) changes no
        decision another transaction makes: a queued and a running run are both "active" to
        dispatch's overlap rule, and a run's token and lease belong to its claimer. What a claim
        may meet that does change such a decision, a malformed run to quarantine (ending a run
        releases its job's waiting run), is done in a SERIALIZABLE transaction of its own, as
        are the expired attempts reclaimed before the look.

        The listening connection LISTENs before the first look, so a run committed after a look
        that missed it wakes the wait at once; a delayed run (or an attempt lease to reap) found
        by the look bounds the wait, so nothing due is left waiting for a notification.
        """
        names = sorted(set(queues))
        deadline = time.monotonic() + max(wait, 0.0)
        if wait > 0:
            self._prepare_to_wait()
        while True:
            looked = time.monotonic()
            self._reap_before_claim()
            try:
                claim, now, wake_at = self._transact(
                    lambda tx: self._claim_once(tx, worker, names, token, ttl),
                    serializable=False,
                )
            except NeedsQuarantine as bad:
                self._transact(partial(work.quarantine, seq=bad.seq))
                continue
            if claim is not None:
                return claim
            wake = deadline
            if wake_at is not None:  # a delayed run or an attempt lease due before the deadline
                wake = min(wake, looked + (wake_at - now) / 1e6)
            woken = self._wait_until(wake)
            if self._closed.is_set() or (not woken and time.monotonic() >= deadline):
                return None

    def _wait_until(self, wake: float) -> bool:
        """Wait for a notification (True) until the monotonic instant ``wake`` or a close."""
        while not self._closed.is_set():
            remaining = wake - time.monotonic()
            if remaining <= 0:
                return False
            if self._wait_for_notice(min(remaining, LISTEN_SLICE)):
                return True
        return False

    def _reap_before_claim(self) -> None:
        """Reclaim expired attempts (and, once a minute, sweep malformed runs) before a claim
        looks, each in a transaction of its own, and only when a cheap look finds some.

        Inside the claim's transaction, the scan of running runs that the reap needs made two
        workers' claims conflict on almost every run (each scanned what the other wrote).
        """
        if self._transact(lambda tx: tx.one(_EXPIRED, (tx.now,)) is not None, atomic=False):
            self._transact(work.reap, notify=True)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_EVERY
            self._transact(work.sweep)

    def _claim_once(
        self, tx: Tx, worker: str, queues: Sequence[str], token: str, ttl: timedelta
    ) -> tuple[Claim | None, int, int | None]:
        claim = work.repeated_claim(tx, token)  # a retried claim: the same claim again
        if claim is not None:
            return claim, tx.now, None
        claim = work.claim_oldest(tx, queues, worker, token, ttl)
        if claim is not None:
            return claim, tx.now, None
        return None, tx.now, work.next_wake(tx, queues)

    def drain_quarantined(self) -> list[Quarantined]:
        with self._lock:
            found, self._quarantined = self._quarantined, []
        return found

    def heartbeat(self, run_id: str, token: str, ttl: timedelta) -> bool:
        return self._transact(lambda tx: work.heartbeat(tx, run_id, token, ttl))

    def finish(self, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        return self._transact(lambda tx: work.finish(tx, run_id, token, result), notify=True)

    def hand_back(self, run_id: str, token: str) -> bool:
        return self._transact(lambda tx: work.hand_back(tx, run_id, token), notify=True)

    def reap(self) -> list[str]:
        return self._transact(work.reap, notify=True)

    def begin_external(self, run: ExternalRun) -> bool:
        return self._transact(lambda tx: EXTERNAL.begin(tx, run))

    def end_external(self, run: ExternalRun, result: AttemptResult) -> bool:
        return self._transact(lambda tx: EXTERNAL.end(tx, run, result))

    # -- outbox ------------------------------------------------------------------------------------

    def set_chains(self, lease: Lease, links: Sequence[ChainLink]) -> None:
        def body(tx: Tx) -> None:
            lead.fence(tx, lease)
            work.chains.set_links(tx, links, lease.epoch)

        self._transact(body)

    def set_event_kinds(self, lease: Lease, kinds: Mapping[str, frozenset[str]]) -> None:
        def body(tx: Tx) -> None:
            lead.fence(tx, lease)
            outbox.set_kinds(tx, kinds)

        self._transact(body)

    def events_due(self, limit: int) -> list[OutboxEvent]:
        def body(tx: Tx) -> list[OutboxEvent]:
            if self._schema_version < OUTBOX_SCHEMA:  # opened as found, by an older chronod
                return []
            return outbox.due(tx.conn, from_micros(tx.now), limit)

        return self._transact(body)

    def settle_event(
        self, event_id: str, attempts: int, done: Sequence[str], retry_at: datetime | None
    ) -> bool:
        return self._transact(lambda tx: outbox.settle(tx, event_id, attempts, done, retry_at))

    def outbox_stats(self) -> OutboxStats:
        def body(tx: Tx) -> OutboxStats:
            if self._schema_version < OUTBOX_SCHEMA:
                return OutboxStats(depth=0, dropped=0)
            return outbox.stats(tx.conn)

        return self._transact(body)

    def note_delivery(self, channel: str, error: str | None) -> None:
        self._transact(lambda tx: outbox.note_delivery(tx, channel, error))

    def deliveries(self) -> list[ChannelDelivery]:
        def body(tx: Tx) -> list[ChannelDelivery]:
            if self._schema_version < OUTBOX_SCHEMA:
                return []
            return outbox.deliveries(tx.conn)

        return self._transact(body)

    def register_worker(self, info: WorkerInfo) -> None:
        def body(tx: Tx) -> None:
            tx.run(_FORGET_WORKERS, (tx.now - micros(SEEN_WINDOW),))
            queues = json.dumps(list(info.queues))
            tx.run(_PUT_WORKER, (info.worker, queues, tx.now, info.running, info.concurrency))

        self._transact(body)

    def workers(self) -> list[WorkerInfo]:
        def body(tx: Tx) -> list[WorkerInfo]:
            found = [worker_info(r) for r in tx.all(_WORKERS, (tx.now - micros(SEEN_WINDOW),))]
            return [info for info in found if info is not None]

        return self._transact(body)

    # -- presence ----------------------------------------------------------------------------------

    def announce(self, member: str, role: Role, *, stopped: bool = False) -> None:
        def body(tx: Tx) -> None:
            tx.run(_FORGET_PRESENCE, (tx.now - micros(SEEN_WINDOW),))
            tx.run(_PUT_PRESENCE, (member, role, tx.now, int(stopped)))

        self._transact(body)

    def presences(self) -> list[Presence]:
        def body(tx: Tx) -> list[Presence]:
            return [
                Presence(
                    member=row["member"],
                    role=row["role"],
                    seen_at=from_micros(row["seen_at"]),
                    stopped=bool(row["stopped"]),
                )
                for row in tx.all(_PRESENCE, (tx.now - micros(SEEN_WINDOW),))
            ]

        return self._transact(body)

    # -- reading -----------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord | None:
        def body(tx: Tx) -> RunRecord | None:
            live = tx.one(_RUN, (run_id,))
            if live is not None:
                return READ.readable(live, ended=False)
            ended = tx.one(_NEWEST_HISTORY_OF_RUN, (run_id,))
            return None if ended is None else READ.readable(ended, ended=True)

        return self._transact(body)

    def live_runs(self, job: str | None = None) -> list[RunRecord]:
        def body(tx: Tx) -> list[RunRecord]:
            rows = tx.all(_LIVE_RUNS) if job is None else tx.all(_LIVE_RUNS_OF, (job,))
            return [READ.readable(row, ended=False) for row in rows]

        return self._transact(body)

    def history(self, job: str, limit: int) -> list[RunRecord]:
        return self._transact(
            lambda tx: [
                READ.readable(row, ended=True) for row in tx.all(_HISTORY, (job, max(limit, 0)))
            ]
        )

    def queue_depths(self) -> dict[str, int]:
        return self._transact(lambda tx: {r["queue"]: int(r["n"]) for r in tx.all(_QUEUE_DEPTHS)})
