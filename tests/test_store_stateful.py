"""SQLite and Redis (and SQLite and PostgreSQL), driven by the same random operations, must give
the same answers.

The dispatch and missed-slot rules exist twice (Lua for Redis, Python for SQLite) and the contract
suite checks each store against hand-picked cases. This test checks them against each other: a
hypothesis state machine sends every operation to both stores (sync, retire, dispatch in all its
outcomes, advance, pause and resume, manual runs, claim, heartbeat, finish, hand back, reap, the
lease, workers and presence), demands the same answer from both, and after every step compares what
everything a caller sees rests on (job states, live runs, histories, queue depths); rules of their
own look at runs by id, one job's live runs, the leader, workers and presences.

Time is the same in both. SQLite takes a :class:`~chronod.clock.ManualClock`; Redis reads its own
``TIME`` inside each script, so the Redis store here runs its scripts with ``now_us()`` (the one
place every script reads the clock, in ``_common.lua``) reading the test's instant from a key that
every round trip sets first, and its client-side clock (``now``, a manual run's id) from the same
manual clock. The clock moves on by a microsecond before every call, as real time does between two
calls. Redis key expiries (slot guards, answers remembered under a token) still run on the server's
clock: the test stays within hours of its start, well inside those lifetimes (a day).

PostgreSQL reads ``clock_timestamp()`` as the first statement of each transaction
(``PostgresConnection._store_time``); the PostgreSQL store here reads the manual clock there
instead, so it too decides everything at the test's instant. Its SQL is its own, while its
dispatch and missed-slot plans are SQLite's: the comparison checks the statements.

Lease epochs are the one value that legitimately differs (Redis starts its counter from its clock,
SQLite from 0): they are compared by order of acquisition.

``--hypothesis-show-statistics`` shows how often each outcome came up (the events).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from chronod.clock import ManualClock
from chronod.errors import StoreError
from chronod.instants import slot_id, to_micros
from chronod.store.base import (
    AttemptResult,
    ChainLink,
    Claim,
    DispatchResult,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    Outcome,
    Overlap,
    Role,
    RunRecord,
    SlotDispatch,
    Store,
    When,
    WorkerInfo,
)
from chronod.store.keys import KeySpace
from chronod.store.postgres.store import PostgresStore
from chronod.store.postgres.url import parse_postgres_url
from chronod.store.redis import RedisStore
from chronod.store.redis.connection import DirectExecutor, Executor, Op
from chronod.store.sqlite import SQLiteStore
from chronod.tz import UTC
from tests.postgres_server import PostgresDatabase, new_namespace
from tests.redis_server import RedisServer

T = TypeVar("T")

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # jobs are first loaded here, a whole minute
JOBS = ("alpha", "beta", "gamma")
NAMES = (*JOBS, "ghost")  # ghost: never loaded (unknown to dispatch; a manual run still works)
MOSTLY_LOADED = st.sampled_from(JOBS * 3 + ("ghost",))
FINGERPRINTS = ("fp-1", "fp-2")
QUEUES = ("q1", "q2")
HISTORY = 2  # small, so that histories are trimmed all the time
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
GUARD_TTL = timedelta(hours=24)
LEASE_TTL = timedelta(minutes=30)
LONG_OUTPUT = "é" * 40_000  # over OUTPUT_TAIL bytes: both stores keep the same tail
OUTCOMES = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.CONFIG_MISMATCH)

# The clock as _common.lua reads it, and what the test puts in its place.
REDIS_TIME = """local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end"""
TEST_TIME = """local function now_us()
  return tonumber(redis.call('GET', P .. 'test:now'))
end"""

overlaps: st.SearchStrategy[Overlap] = st.sampled_from(["skip", "queue", "allow"])
seconds = st.sampled_from([5, 30, 120, 600]).map(lambda s: timedelta(seconds=s))


class LeaseAction(Enum):
    RENEW = "renew"
    ACQUIRE = "acquire"
    RELEASE = "release"
    TAKE_OVER = "take over"


# What the leader does with its lease, the common cases more often.
LEASE_ACTIONS = st.sampled_from(
    [LeaseAction.RENEW] * 3
    + [LeaseAction.ACQUIRE] * 2
    + [LeaseAction.RELEASE, LeaseAction.TAKE_OVER]
)


def often(value: T, otherwise: T) -> st.SearchStrategy[T]:
    """``value`` five times in six, else ``otherwise``."""
    return st.sampled_from([value] * 5 + [otherwise])


@dataclass(frozen=True)
class Item:
    """A slot to dispatch, relative to the test's clock: ``ago`` minutes before the current
    minute (-1: the next one, early); ``stale``: with a fingerprint the store does not have."""

    job: str
    ago: int
    stale: bool
    next_due: bool
    queue: str
    overlap: Overlap
    attempts: int
    superseded: bool


ITEMS = st.builds(
    Item,
    job=MOSTLY_LOADED,
    ago=st.sampled_from([-1, 0, 0, 0, 1, 2, 3]),
    stale=often(False, True),
    next_due=often(True, False),
    queue=st.sampled_from(QUEUES),
    overlap=overlaps,
    attempts=st.integers(1, 3),
    superseded=often(False, True),
)


@dataclass(frozen=True)
class Result:
    """What a worker reports; ``retry_in`` seconds: the retry it asks for, if attempts are left;
    ``long``: with LONG_OUTPUT."""

    outcome: Outcome
    exit_code: int | None
    long: bool
    error: str | None
    retry_in: int | None


RESULTS = st.builds(
    Result,
    outcome=st.sampled_from(OUTCOMES),
    exit_code=st.none() | st.integers(-9, 2),
    long=often(False, True),
    error=st.none() | st.just("it broke"),
    retry_in=st.none() | st.sampled_from([0, 10, 60]),
)


@dataclass(frozen=True)
class Missed:
    """Slots of a job to record as missed, ``agos`` minutes before the current minute; the
    leader counts ``more`` missed slots it does not name."""

    job: str
    agos: tuple[int, ...]
    more: int
    stale: bool
    next_due: bool


MISSED = st.builds(
    Missed,
    job=MOSTLY_LOADED,
    agos=st.lists(st.sampled_from([0, 1, 2, 3]), max_size=3).map(tuple),
    more=st.integers(0, 3),
    stale=often(False, True),
    next_due=often(True, False),
)


class ClockedExecutor:
    """An executor that tells the scripts the test's time: every batch of commands starts by
    setting the key ``now_us()`` reads (TEST_TIME), in the same round trip."""

    def __init__(self, inner: Executor, clock: ManualClock, key: str) -> None:
        self.inner, self.clock, self.key = inner, clock, key

    def run(self, ops: Sequence[Op]) -> list[Any]:
        now = to_micros(self.clock.now())
        return self.inner.run([lambda pipe: pipe.set(self.key, now), *ops])[1:]

    def close(self) -> None:
        self.inner.close()


class ManualTimeRedisStore(RedisStore):
    """A Redis store whose clock is the test's :class:`ManualClock`, in scripts and client."""

    def __init__(self, server: RedisServer, clock: ManualClock) -> None:
        namespace = f"sm{uuid.uuid4().hex[:12]}"
        key = KeySpace(namespace).prefix + "test:now"
        client = redis.Redis(
            host="127.0.0.1", port=server.port, decode_responses=True, socket_timeout=10
        )
        executor = ClockedExecutor(DirectExecutor(client), clock, key)
        super().__init__(None, namespace=namespace, history=HISTORY, executor=executor)
        self.clock = clock
        for name, source in self._scripts.items():
            assert REDIS_TIME in source, "_common.lua no longer reads TIME in now_us()"
            self._scripts[name] = source.replace(REDIS_TIME, TEST_TIME)
            self._shas[name] = hashlib.sha1(self._scripts[name].encode("utf-8")).hexdigest()

    def _time_us(self) -> int:
        return to_micros(self.clock.now())


def outcome_of(call: Callable[[], T]) -> tuple[str, T | None]:
    """``call()``'s answer, or the type of the store error it raised (texts may differ by store;
    anything else is a bug, and fails the test where it is raised)."""
    try:
        return "answer", call()
    except StoreError as exc:
        return type(exc).__name__, None


class StoresAgree(RuleBasedStateMachine):
    """Both stores, one clock; the Redis server and a directory for SQLite are set by the test
    (a fixture: hypothesis builds a machine for every example). Subclasses compare SQLite with
    another store (:meth:`open_other`)."""

    server: RedisServer
    directory: Path

    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        # A quarter second past a whole minute: the minute's slot is due, the next one early.
        self.clock = ManualClock(START + 10 * MINUTE + timedelta(milliseconds=250))
        folder = self.directory / uuid.uuid4().hex[:12]
        self.sqlite = SQLiteStore(folder / "state.db", history=HISTORY, clock=self.clock)
        self.other = self.open_other()
        self.stores: tuple[Store, Store] = (self.sqlite, self.other)
        self.epochs: tuple[list[int], list[int]] = ([], [])  # per store, in acquisition order
        self.leases: tuple[Lease, Lease] | None = None
        self.run_ids: set[str] = set()
        self.tokens = 0
        self.last_batch: list[SlotDispatch] = []

    def open_other(self) -> Store:
        return ManualTimeRedisStore(self.server, self.clock)

    def forget_other(self) -> None:
        """Delete the other store's state (it lives on a server other tests share)."""
        assert isinstance(self.other, ManualTimeRedisStore)
        client = self.server.client()
        keys = client.keys(self.other._keys.prefix + "*")
        if keys:
            client.delete(*keys)

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        self.forget_other()

    # -- calling both ------------------------------------------------------------------------------

    def agree(self, call: Callable[[Store], T]) -> T | None:
        """``call`` on each store; the answers (normalised) must be equal. Returns SQLite's."""
        self.advance(timedelta(microseconds=1))
        (kind, first), (other_kind, second) = [outcome_of(partial(call, s)) for s in self.stores]
        assert (kind, self.norm(0, first)) == (other_kind, self.norm(1, second))
        return first

    def lead(self, call: Callable[[Store, Lease], T]) -> T | None:
        """A leader write on both stores, each with its own lease (epochs differ)."""
        if self.leases is None:
            return None
        self.advance(timedelta(microseconds=1))
        (kind, first), (other_kind, second) = [
            outcome_of(partial(call, store, lease))
            for store, lease in zip(self.stores, self.leases, strict=True)
        ]
        assert (kind, self.norm(0, first)) == (other_kind, self.norm(1, second))
        if kind != "answer":
            event(f"leader write: {kind}")
        return first

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta.total_seconds())

    def epoch(self, index: int, epoch: int) -> int:
        """A lease epoch as its rank among this store's acquisitions."""
        known = self.epochs[index]
        return known.index(epoch) + 1 if epoch in known else -epoch

    def norm(self, index: int, value: Any) -> Any:
        """``value`` with store ``index``'s epochs replaced by their rank (see the module docs)."""
        if isinstance(value, (list, tuple)):
            return [self.norm(index, v) for v in value]
        if isinstance(value, dict):
            return {k: self.norm(index, v) for k, v in value.items()}
        if isinstance(value, RunRecord) and value.epoch:  # (0: a manual run)
            return replace(value, epoch=self.epoch(index, value.epoch))
        if isinstance(value, Claim):
            return replace(value, run=self.norm(index, value.run))
        if isinstance(value, (Lease, LeaderInfo)):
            return replace(value, epoch=self.epoch(index, value.epoch))
        return value

    # -- what the next step may use ----------------------------------------------------------------

    def minute(self) -> datetime:
        """The latest whole minute at or before now: the newest slot that is due."""
        return self.clock.now().replace(second=0, microsecond=0)

    def remember(self, records: Any) -> None:
        for record in records if isinstance(records, list) else [records]:
            if isinstance(record, DispatchResult):
                event(f"dispatch: {record.status.value}")
            if isinstance(record, (DispatchResult, RunRecord)) and record.run_id:
                self.run_ids.add(record.run_id)

    # -- leader ------------------------------------------------------------------------------------

    @initialize(first=st.lists(ITEMS, max_size=4))
    def first_load(self, first: list[Item]) -> None:
        """A leader loads every job, and dispatches its ``first`` slots (so that most examples
        have runs to claim from their first step)."""
        self.acquire("node-a", uuid.uuid4().hex)
        jobs = [JobSync(name=name, fingerprint="fp-1", next_due=START + MINUTE) for name in JOBS]
        self.lead(lambda s, lease: s.sync_jobs(lease, jobs, START))
        batch = [self.dispatch_item(item) for item in first]
        self.remember(self.lead(lambda s, lease: s.dispatch(lease, batch)))

    @rule(action=LEASE_ACTIONS)
    def lease(self, action: LeaseAction) -> None:
        """The leader renews (or acquires again with its token: the same lease until it has
        expired), gives the lease up, or another node tries to take over (and leads from then
        on if it gets the lease)."""
        if action is LeaseAction.RENEW:
            renewed = self.lead(lambda s, lease: s.renew_lease(lease, LEASE_TTL))
            if renewed is not None and self.leases is not None:
                self.leases = (
                    replace(self.leases[0], expires_at=renewed.expires_at),
                    replace(self.leases[1], expires_at=renewed.expires_at),
                )
        elif action is LeaseAction.RELEASE:
            self.lead(lambda s, lease: s.release_lease(lease))
        elif action is LeaseAction.ACQUIRE and self.leases is not None:
            self.acquire(self.leases[0].node, self.leases[0].token)
        else:
            node = "node-b" if self.leases and self.leases[0].node == "node-a" else "node-a"
            self.acquire(node, uuid.uuid4().hex)

    def acquire(self, node: str, token: str) -> None:
        self.advance(timedelta(microseconds=1))
        first, second = (s.acquire_lease(node, token, LEASE_TTL) for s in self.stores)
        assert (first is None) == (second is None)
        if first is not None and second is not None:
            for known, lease in zip(self.epochs, (first, second), strict=True):
                if lease.epoch not in known:
                    known.append(lease.epoch)
            assert self.norm(0, first) == self.norm(1, second)
            self.leases = (first, second)
        event(f"acquire: {'lease' if first else 'held by another'}")

    @rule(
        edited=st.sets(st.sampled_from(JOBS), max_size=2),
        removed=often(None, "beta"),
        loaded_ago=st.sampled_from([0, 0, 1, 90]),
        next_due=often(1, None),
    )
    def load(
        self, edited: set[str], removed: str | None, loaded_ago: int, next_due: int | None
    ) -> None:
        """A leader's load, ``loaded_ago`` seconds ago: every configured job, those ``edited``
        with a new fingerprint; a job ``removed`` from the config is retired (and comes back
        with a later load). Jobs are due ``next_due`` minutes after the current one."""
        states = self.sqlite.job_states()
        batch = []
        for name in JOBS:
            stored = states[name].fingerprint if name in states else ""
            fingerprint = stored or "fp-1"
            if name in edited:
                fingerprint = next(f for f in FINGERPRINTS if f != stored)
            due = None if next_due is None else self.minute() + next_due * MINUTE
            batch.append(JobSync(name=name, fingerprint=fingerprint, next_due=due))
        loaded = self.clock.now() - loaded_ago * SECOND
        configured = [job for job in batch if job.name != removed]
        self.lead(lambda s, lease: s.sync_jobs(lease, configured, loaded))
        self.lead(lambda s, lease: s.retire_jobs(lease, [job.name for job in configured]))

    def slot(self, ago: int) -> datetime:
        """The slot ``ago`` minutes before the current minute (-1: the next, not due yet)."""
        return self.minute() - ago * MINUTE

    def stored_fingerprint(self, job: str, stale: bool) -> str:
        """The fingerprint the job has in the store (as SQLite says), or a stale one."""
        stored = self.sqlite.job_states().get(job)
        return "fp-stale" if stale else stored.fingerprint if stored else "fp-1"

    def dispatch_item(self, spec: Item) -> SlotDispatch:
        slot = self.slot(spec.ago)
        return SlotDispatch(
            job=spec.job,
            fingerprint=self.stored_fingerprint(spec.job, spec.stale),
            slot=slot,
            next_due=slot + MINUTE if spec.next_due else None,
            queue=spec.queue,
            digest="digest",
            overlap=spec.overlap,
            max_attempts=spec.attempts,
            guard_ttl=GUARD_TTL,
            superseded_by=slot_id(spec.job, slot + MINUTE) if spec.superseded else None,
        )

    @rule(
        items=st.lists(ITEMS, min_size=1, max_size=4),
        later=st.sampled_from([0, 30, 60, 60, 120]),
        repeat=st.sampled_from(["no", "no", "no", "at once", "later"]),
    )
    def dispatch(self, items: list[Item], later: int, repeat: str) -> None:
        """A tick ``later`` seconds on: ``items``; or the previous batch again, as a leader
        retrying after a timeout (at once, or much later) does."""
        self.advance(later * SECOND)
        batch = self.last_batch if repeat == "later" and self.last_batch else []
        batch = batch or [self.dispatch_item(item) for item in items]
        for _ in range(2 if repeat == "at once" else 1):
            self.remember(self.lead(lambda s, lease: s.dispatch(lease, batch)))
        self.last_batch = batch

    @rule(items=st.lists(MISSED, min_size=1, max_size=3))
    def advance_slots(self, items: list[Missed]) -> None:
        """The leader records slots it will not run (named in any order: the store sorts them)."""
        batch = [
            MissedSlots(
                job=item.job,
                fingerprint=self.stored_fingerprint(item.job, item.stale),
                missed=tuple(self.slot(ago) for ago in item.agos),
                missed_count=len(item.agos) + item.more,
                next_due=self.minute() + MINUTE if item.next_due else None,
            )
            for item in items
        ]
        for item in batch:
            self.run_ids.update(slot_id(item.job, slot) for slot in item.missed)
        self.lead(lambda s, lease: s.advance_many(lease, batch))

    # -- operators ---------------------------------------------------------------------------------

    @rule(
        links=st.lists(
            st.tuples(
                st.sampled_from(NAMES),
                st.sampled_from(NAMES),
                st.sampled_from(["succeeded", "failed", "finished"]),
                overlaps,
                st.sampled_from(QUEUES),
            ),
            max_size=3,
        )
    )
    def chain(self, links: list[tuple[str, str, When, Overlap, str]]) -> None:
        """The leader replaces the chains: later run ends start followers in the same step."""
        chained = [
            ChainLink(
                job=job,
                upstream=upstream,
                when=when,
                queue=queue,
                digest="d-chain",
                overlap=overlap,
                max_attempts=2,
            )
            for job, upstream, when, overlap, queue in links
        ]
        self.lead(lambda s, lease: s.set_chains(lease, chained))

    @rule(job=st.sampled_from(NAMES), paused=st.booleans())
    def pause(self, job: str, paused: bool) -> None:
        self.agree(lambda s: s.set_paused(job, paused))

    @rule(
        job=st.sampled_from(NAMES),
        queue=st.sampled_from(QUEUES),
        overlap=overlaps,
        attempts=st.integers(1, 3),
    )
    def trigger(self, job: str, queue: str, overlap: Overlap, attempts: int) -> None:
        self.remember(self.agree(lambda s: s.enqueue_manual(job, queue, "d", overlap, attempts)))

    # -- workers -----------------------------------------------------------------------------------

    @rule(
        target=claims,
        queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2),
        ttl=seconds,
        repeat=st.booleans(),
    )
    def claim(self, queues: list[str], ttl: timedelta, repeat: bool) -> Any:
        """A claim, maybe retried (a retry after a timeout gets the same claim)."""
        return self.claimed(queues, ttl, repeat) or multiple()

    @rule(
        target=claims,
        queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2),
        ttl=seconds,
        result=RESULTS,
        hand_back=often(False, True),
    )
    def work(self, queues: list[str], ttl: timedelta, result: Result, hand_back: bool) -> Any:
        """A worker's whole attempt: a claim, then its result (or, now and then, the run handed
        back)."""
        claim = self.claimed(queues, ttl, repeat=False)
        if claim is None:
            return multiple()
        if hand_back:
            self.hand_back(claim)
        else:
            self.finished(claim, result, repeat=False)
        return claim

    def claimed(self, queues: list[str], ttl: timedelta, repeat: bool) -> tuple[str, str] | None:
        self.tokens += 1
        token = f"token-{self.tokens}"
        claim = self.agree(lambda s: s.claim("worker-1", queues, token, ttl, 0))
        if repeat:
            again = self.agree(lambda s: s.claim("worker-1", queues, token, ttl, 0))
            assert self.norm(0, again) == self.norm(0, claim)
        event(f"claim: {'a run' if claim else 'nothing ready'}")
        return None if claim is None else (claim.run.run_id, token)

    @rule(claim=claims, ttl=seconds)
    def heartbeat(self, claim: tuple[str, str], ttl: timedelta) -> None:
        run_id, token = claim
        event(f"heartbeat: {self.agree(lambda s: s.heartbeat(run_id, token, ttl))}")

    @rule(claim=claims, result=RESULTS, repeat=st.booleans())
    def finish(self, claim: tuple[str, str], result: Result, repeat: bool) -> None:
        """A result, maybe retried (a retry after a timeout gets the same answer), maybe late
        (the attempt was reclaimed or ended meanwhile: stale)."""
        self.finished(claim, result, repeat)

    def finished(self, claim: tuple[str, str], result: Result, repeat: bool) -> None:
        run_id, token = claim
        retry_in = result.retry_in
        attempt = AttemptResult(
            outcome=result.outcome,
            exit_code=result.exit_code,
            output=LONG_OUTPUT if result.long else "ok\n",
            error=result.error,
            retry_at=None if retry_in is None else self.clock.now() + retry_in * SECOND,
        )
        for _ in range(2 if repeat else 1):
            status = self.agree(lambda s: s.finish(run_id, token, attempt))
            event(f"finish: {status.value if status else None}")

    @rule(claim=claims)
    def hand_back(self, claim: tuple[str, str]) -> None:
        run_id, token = claim
        event(f"hand back: {self.agree(lambda s: s.hand_back(run_id, token))}")

    @rule(
        member=st.sampled_from(["host-a:1", "host-b:2"]),
        role=st.sampled_from(["scheduler", "worker"]),
        queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2).map(tuple),
        stopped=st.booleans(),
    )
    def presence(self, member: str, role: Role, queues: tuple[str, ...], stopped: bool) -> None:
        """A worker's registration, or a process announcing itself (or its clean stop)."""
        if role == "worker" and not stopped:
            now = self.clock.now()
            info = WorkerInfo(worker=member, queues=queues, seen_at=now, running=1, concurrency=4)
            self.agree(lambda s: s.register_worker(info))
        else:
            self.agree(lambda s: s.announce(member, role, stopped=stopped))

    @rule(which=st.integers(0, 99))
    def look_up(self, which: int) -> None:
        """A run by id: live, else its newest history entry (none once trimmed away)."""
        if self.run_ids:
            run_id = sorted(self.run_ids)[which % len(self.run_ids)]
            self.agree(lambda s: s.run(run_id))

    @rule(job=st.sampled_from(NAMES))
    def look_around(self, job: str) -> None:
        """What status shows besides the invariant's view: one job's live runs, the leader,
        workers and presences."""
        self.agree(lambda s: s.live_runs(job))
        self.agree(lambda s: s.leader())
        self.agree(lambda s: s.workers())
        self.agree(lambda s: s.presences())

    # -- time --------------------------------------------------------------------------------------

    @rule(wait=st.sampled_from([0.5, 2, 10, 30, 61, 150, 400]), reap=st.booleans())
    def wait(self, wait: float, reap: bool) -> None:
        """Time passes; then, maybe, attempts whose lease expired are reclaimed."""
        self.advance(timedelta(seconds=wait))
        if reap:
            event(f"reap: {len(self.agree(lambda s: sorted(s.reap())) or ())} run(s)")

    # -- what a caller can see ---------------------------------------------------------------------

    @invariant()
    def observably_the_same(self) -> None:
        views = [self.norm(index, self.view(store)) for index, store in enumerate(self.stores)]
        assert views[0] == views[1]

    def view(self, store: Store) -> dict[str, Any]:
        return {
            "jobs": store.job_states(),
            "live": store.live_runs(),
            "history": {name: store.history(name, 100) for name in NAMES},
            "queues": store.queue_depths(),
        }


# A failing run shrinks its example for up to five minutes (hypothesis's own limit): long enough
# a timeout for it to print the example it found.
@pytest.mark.timeout(600)
@pytest.mark.redis
class TestSQLiteAndRedisAnswerAlike(StoresAgree.TestCase):  # type: ignore[misc, valid-type]
    settings = settings(max_examples=100, stateful_step_count=40, deadline=None)

    @pytest.fixture(autouse=True)
    def _stores_live_in(self, redis_server: RedisServer, tmp_path: Path) -> None:
        StoresAgree.server = redis_server
        StoresAgree.directory = tmp_path


class ManualTimePostgresStore(PostgresStore):
    """A PostgreSQL store (in a fresh schema) whose store time is the test's ManualClock."""

    def __init__(self, database: PostgresDatabase, clock: ManualClock) -> None:
        super().__init__(
            parse_postgres_url(database.url, new_namespace()), history=HISTORY, create=True
        )
        self.clock = clock

    def _store_time(self, conn: Any) -> int:
        return to_micros(self.clock.now())


class PostgresAgrees(StoresAgree):
    """SQLite and PostgreSQL: the same operations, the same answers."""

    database: PostgresDatabase

    def open_other(self) -> Store:
        return ManualTimePostgresStore(self.database, self.clock)

    def forget_other(self) -> None:
        assert isinstance(self.other, ManualTimePostgresStore)
        with self.database.connect() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.other._target.schema}" CASCADE')


@pytest.mark.timeout(600)
@pytest.mark.postgres
class TestSQLiteAndPostgresAnswerAlike(PostgresAgrees.TestCase):  # type: ignore[misc, valid-type]
    # Fewer examples than Redis's: each opens a schema of its own (DDL), and the CI budget is
    # shared; the rules under test are SQLite's, so what differs is the statements.
    settings = settings(max_examples=40, stateful_step_count=40, deadline=None)

    @pytest.fixture(autouse=True)
    def _stores_live_in(self, postgres_db: PostgresDatabase, tmp_path: Path) -> None:
        PostgresAgrees.database = postgres_db
        PostgresAgrees.directory = tmp_path
