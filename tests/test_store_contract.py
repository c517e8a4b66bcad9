"""The one contract suite every store must pass.

The docstrings of :mod:`chronod.store.base` are the specification; every test here runs against
SQLite, Redis and PostgreSQL through the ``store`` fixture and asserts only what that spec (and
docs/design.md §3-§5) promises. Backend-specific peeking is limited to one clearly marked
assertion (the guard's expiry: a Redis key TTL, a SQLite or PostgreSQL row).

Conventions:

* instants are derived from ``store.now()`` (``base`` is a whole second two hours ago, and every job
  is loaded at ``base``), so slots between ``base`` and now are due and after the watermark;
* nothing synchronises on a bare sleep: time-dependent steps poll a condition on store time with a
  deadline (:func:`wait_until`, :func:`wait_past`);
* short leases (300 ms) are used where expiry is the point, long ones (60 s) everywhere else.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from chronod.instants import slot_id, to_micros
from chronod.store.base import (
    EVENT_OUTPUT,
    AttemptResult,
    ChainLink,
    Claim,
    DispatchResult,
    DispatchStatus,
    ExternalRun,
    Fenced,
    FinishStatus,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    OutboxStats,
    Outcome,
    Overlap,
    RunRecord,
    RunState,
    SlotDispatch,
    Store,
    When,
    WorkerInfo,
    chained_run_id,
)
from chronod.tz import UTC
from tests.conftest import ALL_STORE_KINDS, make_store
from tests.redis_server import RedisServer

T = TypeVar("T")

JOBS = ("alpha", "beta", "gamma")
FP = "fp-1"
DIGEST = "digest-1"
MINUTE = timedelta(minutes=1)
DAY = timedelta(hours=24)
LEASE_TTL = timedelta(seconds=60)
ATTEMPT_TTL = timedelta(seconds=60)
SHORT_TTL = timedelta(milliseconds=300)
SUCCESS = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="ok\n")


# -- helpers -------------------------------------------------------------------------------------


def new_token() -> str:
    return uuid.uuid4().hex


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 5.0, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def wait_past(store: Store, instant: datetime, timeout: float = 5.0) -> None:
    """Return once store time is strictly after ``instant``."""
    wait_until(lambda: store.now() > instant, timeout, f"store time to pass {instant}")


def item(
    job: str,
    at: datetime,
    *,
    fingerprint: str = FP,
    next_due: datetime | None = None,
    queue: str = "default",
    digest: str = DIGEST,
    overlap: Overlap = "allow",
    max_attempts: int = 1,
    guard_ttl: timedelta = DAY,
) -> SlotDispatch:
    """A :class:`SlotDispatch` with test defaults (``next_due`` defaults to ``at`` + 1 min)."""
    return SlotDispatch(
        job=job,
        fingerprint=fingerprint,
        slot=at,
        next_due=at + MINUTE if next_due is None else next_due,
        queue=queue,
        digest=digest,
        overlap=overlap,
        max_attempts=max_attempts,
        guard_ttl=guard_ttl,
    )


def dispatch_one(store: Store, lease: Lease, slot: SlotDispatch) -> DispatchResult:
    results = store.dispatch(lease, [slot])
    assert len(results) == 1
    return results[0]


def queued(store: Store, lease: Lease, slot: SlotDispatch) -> str:
    """Dispatch ``slot``, insist it was QUEUED, return its run id."""
    result = dispatch_one(store, lease, slot)
    assert result.status is DispatchStatus.QUEUED, result
    assert result.run_id == slot_id(slot.job, slot.slot)
    return result.run_id


def claim_one(
    store: Store,
    *,
    queues: Sequence[str] = ("default",),
    worker: str = "worker-1",
    ttl: timedelta = ATTEMPT_TTL,
    token: str | None = None,
) -> Claim:
    claim = store.claim(worker, list(queues), token or new_token(), ttl, 0)
    assert claim is not None, "expected a ready run to claim"
    return claim


def job(store: Store, name: str) -> JobState:
    states = store.job_states()
    assert name in states, f"no state for job {name!r}"
    return states[name]


def live(store: Store, run_id: str) -> RunRecord:
    record = store.run(run_id)
    assert record is not None, f"run {run_id} not found"
    return record


def depth(store: Store, queue: str = "default") -> int:
    return store.queue_depths().get(queue, 0)


def snapshot(store: Store) -> tuple[object, ...]:
    """Everything observable about jobs and runs (for "wrote nothing" assertions)."""
    states = store.job_states()
    return (
        states,
        store.live_runs(),
        {name: store.history(name, 1000) for name in sorted(states)},
        {q: n for q, n in store.queue_depths().items() if n},
    )


@pytest.fixture(params=ALL_STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store: SQLite, Redis and PostgreSQL (conftest's ``store_kind`` has the first two)."""
    return str(request.param)


class Peers:
    """Extra store instances sharing one backing state (among themselves, not with ``store``).

    SQLite: the same database file (built via ``make_store``). Redis: the same namespace on the
    test's server (``make_store`` would FLUSHALL and pick a fresh namespace, so ``from_url`` is
    used). PostgreSQL: the same schema of the session's database.
    :meth:`open` may be called from any thread; the caller closes what it opened. Calling the object
    opens a store that is closed at teardown.
    """

    def __init__(self, kind: str, request: pytest.FixtureRequest, directory: Path) -> None:
        self.kind = kind
        self.request = request
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.namespace = f"peers{uuid.uuid4().hex[:10]}"
        self.url = ""
        if kind == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            self.url = server.url
        elif kind == "postgres":
            self.url = request.getfixturevalue("postgres_db").url
        self._owned: list[Store] = []

    def open(self) -> Store:
        if self.kind == "sqlite":
            return make_store("sqlite", self.request, self.directory)
        if self.kind == "postgres":
            from chronod.store.postgres.store import PostgresStore

            return PostgresStore.from_url(self.url, namespace=self.namespace)
        from chronod.store.redis import RedisStore

        return RedisStore.from_url(self.url, namespace=self.namespace)

    def __call__(self) -> Store:
        opened = self.open()
        self._owned.append(opened)
        return opened

    def close(self) -> None:
        for opened in self._owned:
            opened.close()


@pytest.fixture
def peers(
    store: Store, store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Peers]:
    # Depends on ``store`` so that (Redis) the per-test FLUSHALL happens before any peer exists.
    group = Peers(store_kind, request, tmp_path / "peers")
    yield group
    group.close()


@pytest.fixture
def base(store: Store) -> datetime:
    """A whole second two hours before store time: the load instant of every job."""
    return store.now().replace(microsecond=0) - timedelta(hours=2)


def lead(store: Store, base: datetime, node: str = "node-a") -> Lease:
    lease = store.acquire_lease(node, new_token(), LEASE_TTL)
    assert lease is not None
    states = store.sync_jobs(
        lease, [JobSync(name=name, fingerprint=FP, next_due=base + MINUTE) for name in JOBS], base
    )
    assert [s.name for s in states] == list(JOBS)
    return lease


@pytest.fixture
def leader(store: Store, base: datetime) -> Lease:
    """A 60 s lease on ``store`` with JOBS synced (fingerprint FP) at ``base``."""
    return lead(store, base)


# -- leader lease ----------------------------------------------------------------------------------


def test_lease_acquire_returns_new_lease(store: Store) -> None:
    assert store.leader() is None
    token = new_token()
    before = store.now()
    lease = store.acquire_lease("node-a", token, LEASE_TTL)
    after = store.now()
    assert lease is not None
    assert lease.token == token
    assert lease.node == "node-a"
    assert lease.epoch >= 1
    assert before + LEASE_TTL <= lease.expires_at <= after + LEASE_TTL


def test_lease_is_exclusive_while_held(store: Store) -> None:
    held = store.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert held is not None
    assert store.acquire_lease("node-b", new_token(), LEASE_TTL) is None
    assert store.leader() == LeaderInfo(node="node-a", epoch=held.epoch, expires_at=held.expires_at)


def test_lease_acquire_with_same_token_is_idempotent(store: Store) -> None:
    token = new_token()
    first = store.acquire_lease("node-a", token, LEASE_TTL)
    second = store.acquire_lease("node-a", token, LEASE_TTL)
    assert first is not None
    assert second == first
    assert (
        second.token == first.token
    )  # token is excluded from repr, not from equality: be explicit
    info = store.leader()
    assert info is not None
    assert (info.epoch, info.expires_at) == (first.epoch, first.expires_at)


def test_lease_epoch_grows_by_one_per_acquisition(store: Store) -> None:
    epochs: list[int] = []
    for index in range(3):  # successive acquisitions after release
        lease = store.acquire_lease(f"node-{index}", new_token(), LEASE_TTL)
        assert lease is not None
        epochs.append(lease.epoch)
        store.release_lease(lease)
    short = store.acquire_lease("node-x", new_token(), SHORT_TTL)  # and after expiry
    assert short is not None
    epochs.append(short.epoch)
    wait_past(store, short.expires_at)
    taken = store.acquire_lease("node-y", new_token(), LEASE_TTL)
    assert taken is not None
    epochs.append(taken.epoch)
    assert epochs == list(range(epochs[0], epochs[0] + 5))


def test_lease_only_one_of_many_concurrent_acquirers_wins(peers: Peers) -> None:
    contenders = 8
    observer = peers()  # opened first, so the contenders race on acquisition, not on schema setup
    previous_epoch: int | None = None

    def contend(barrier: threading.Barrier, index: int) -> Lease | None:
        own = peers.open()  # each thread its own instance, built and closed in that thread
        try:
            barrier.wait(timeout=10)
            return own.acquire_lease(f"node-{index}", new_token(), LEASE_TTL)
        finally:
            own.close()

    for _round in range(3):
        barrier = threading.Barrier(contenders)

        with ThreadPoolExecutor(contenders) as pool:
            results = list(pool.map(contend, [barrier] * contenders, range(contenders)))
        winners = [lease for lease in results if lease is not None]
        assert len(winners) == 1, f"{len(winners)} concurrent acquirers won: {winners}"
        winner = winners[0]
        assert observer.leader() == LeaderInfo(
            node=winner.node, epoch=winner.epoch, expires_at=winner.expires_at
        )
        if previous_epoch is not None:
            assert winner.epoch == previous_epoch + 1
        previous_epoch = winner.epoch
        observer.release_lease(winner)  # any instance holding the Lease may release it
        assert observer.leader() is None


def test_separate_stores_do_not_share_state(store: Store, peers: Peers) -> None:
    other = peers()  # another database file / another Redis namespace on the same server
    lease = other.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease is not None
    assert store.leader() is None
    mine = store.acquire_lease("node-b", new_token(), LEASE_TTL)
    assert mine is not None
    assert other.leader() == LeaderInfo(
        node="node-a", epoch=lease.epoch, expires_at=lease.expires_at
    )


def test_lease_renew_extends_current_lease(store: Store) -> None:
    lease = store.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease is not None
    longer = timedelta(seconds=120)
    before = store.now()
    renewed = store.renew_lease(lease, longer)
    after = store.now()
    assert renewed is not None
    assert (renewed.token, renewed.epoch, renewed.node) == (lease.token, lease.epoch, lease.node)
    assert before + longer <= renewed.expires_at <= after + longer
    assert store.leader() == LeaderInfo(
        node="node-a", epoch=lease.epoch, expires_at=renewed.expires_at
    )


def test_lease_renew_with_stale_token_fails(store: Store) -> None:
    lease = store.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease is not None
    assert store.renew_lease(replace(lease, token=new_token()), LEASE_TTL) is None
    assert store.leader() == LeaderInfo(
        node="node-a", epoch=lease.epoch, expires_at=lease.expires_at
    )
    # Superseded: released, another node took over.
    store.release_lease(lease)
    other = store.acquire_lease("node-b", new_token(), LEASE_TTL)
    assert other is not None
    assert store.renew_lease(lease, LEASE_TTL) is None
    assert store.leader() == LeaderInfo(
        node="node-b", epoch=other.epoch, expires_at=other.expires_at
    )


def test_lease_renew_with_other_epoch_fails(store: Store) -> None:
    token = new_token()
    old = store.acquire_lease("node-a", token, LEASE_TTL)
    assert old is not None
    store.release_lease(old)
    current = store.acquire_lease("node-a", token, LEASE_TTL)  # same token, next epoch
    assert current is not None
    assert current.epoch == old.epoch + 1
    assert store.renew_lease(old, LEASE_TTL) is None
    assert store.renew_lease(replace(current, epoch=current.epoch - 1), LEASE_TTL) is None
    assert store.renew_lease(replace(current, epoch=current.epoch + 1), LEASE_TTL) is None
    assert store.leader() == LeaderInfo(
        node="node-a", epoch=current.epoch, expires_at=current.expires_at
    )


def test_lease_expired_is_never_renewed_even_without_takeover(store: Store) -> None:
    short = store.acquire_lease("node-a", new_token(), SHORT_TTL)
    assert short is not None
    wait_past(store, short.expires_at)
    assert store.leader() is None
    assert store.renew_lease(short, LEASE_TTL) is None
    assert store.leader() is None
    # The holder must acquire again - even with the same token - and gets a new epoch.
    again = store.acquire_lease("node-a", short.token, LEASE_TTL)
    assert again is not None
    assert again.epoch == short.epoch + 1
    assert store.renew_lease(short, LEASE_TTL) is None


def test_lease_release_lets_another_node_acquire_at_once(peers: Peers) -> None:
    node_a, node_b = peers(), peers()
    lease_a = node_a.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease_a is not None
    assert node_b.acquire_lease("node-b", new_token(), LEASE_TTL) is None
    node_a.release_lease(lease_a)
    assert node_b.leader() is None
    assert node_a.renew_lease(lease_a, LEASE_TTL) is None  # released is over, as expired is
    lease_b = node_b.acquire_lease("node-b", new_token(), LEASE_TTL)
    assert lease_b is not None
    assert lease_b.epoch == lease_a.epoch + 1
    node_a.release_lease(lease_a)  # releasing again: a no-op
    assert node_a.leader() == LeaderInfo(
        node="node-b", epoch=lease_b.epoch, expires_at=lease_b.expires_at
    )


def test_lease_release_by_non_holder_is_a_noop(store: Store) -> None:
    token = new_token()
    old = store.acquire_lease("node-a", token, LEASE_TTL)
    assert old is not None
    store.release_lease(old)
    holder = store.acquire_lease("node-b", token + "-b", LEASE_TTL)
    assert holder is not None
    expected = LeaderInfo(node="node-b", epoch=holder.epoch, expires_at=holder.expires_at)
    store.release_lease(old)  # a former lease
    store.release_lease(replace(holder, token=new_token()))  # wrong token
    store.release_lease(replace(holder, epoch=holder.epoch - 1))  # right token, wrong epoch
    assert store.leader() == expected
    assert store.acquire_lease("node-c", new_token(), LEASE_TTL) is None


def test_leader_reports_node_epoch_and_expiry(store: Store) -> None:
    assert store.leader() is None
    lease = store.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease is not None
    assert store.leader() == LeaderInfo(
        node="node-a", epoch=lease.epoch, expires_at=lease.expires_at
    )
    renewed = store.renew_lease(lease, 2 * LEASE_TTL)
    assert renewed is not None
    assert store.leader() == LeaderInfo(
        node="node-a", epoch=lease.epoch, expires_at=renewed.expires_at
    )
    store.release_lease(renewed)
    assert store.leader() is None


# -- fencing ---------------------------------------------------------------------------------------

STALENESS = ["wrong-token", "wrong-epoch", "old-epoch", "superseded", "expired"]


def stale_lease(store: Store, lease: Lease, how: str) -> Lease:
    """A lease that must be refused, made from the current ``lease`` in the way ``how`` names."""
    if how == "wrong-token":  # current epoch, someone else's token
        return replace(lease, token=new_token())
    if how == "wrong-epoch":  # current token, previous epoch
        return replace(lease, epoch=lease.epoch - 1)
    if how == "old-epoch":  # the same node re-acquired with the same token: the old epoch is dead
        store.release_lease(lease)
        again = store.acquire_lease(lease.node, lease.token, LEASE_TTL)
        assert again is not None
        assert again.epoch == lease.epoch + 1
        return lease
    if how == "superseded":  # another node leads now
        store.release_lease(lease)
        assert store.acquire_lease("node-b", new_token(), LEASE_TTL) is not None
        return lease
    assert how == "expired"  # nobody took over, but the lease ran out (a paused ex-leader)
    store.release_lease(lease)
    short = store.acquire_lease(lease.node, new_token(), SHORT_TTL)
    assert short is not None
    wait_past(store, short.expires_at)
    return short


LeaderWrite = Callable[[Store, Lease, datetime], object]

LEADER_WRITES: dict[str, LeaderWrite] = {
    "dispatch": lambda s, lease, base: s.dispatch(
        lease, [item("alpha", base + 20 * MINUTE), item("beta", base + 20 * MINUTE)]
    ),
    "sync_jobs": lambda s, lease, base: s.sync_jobs(
        lease,
        [
            JobSync(name="alpha", fingerprint="fp-2", next_due=base + 90 * MINUTE),
            JobSync(name="delta", fingerprint=FP, next_due=base + 90 * MINUTE),
        ],
        base + 30 * MINUTE,
    ),
    "advance": lambda s, lease, base: s.advance(
        lease, "alpha", FP, [base + 30 * MINUTE], 3, base + 31 * MINUTE
    ),
    "retire_jobs": lambda s, lease, base: s.retire_jobs(lease, ["alpha"]),
    "advance_many": lambda s, lease, base: s.advance_many(
        lease,
        [
            missed_slots("alpha", [base + 30 * MINUTE], 3, base + 31 * MINUTE),
            missed_slots("beta", [base + 30 * MINUTE], 1, base + 31 * MINUTE),
        ],
    ),
}


@pytest.mark.parametrize("how", STALENESS)
@pytest.mark.parametrize("write", sorted(LEADER_WRITES))
def test_fenced_leader_write_raises_and_writes_nothing(
    store: Store, leader: Lease, base: datetime, write: str, how: str
) -> None:
    queued(store, leader, item("alpha", base + 10 * MINUTE))
    stale = stale_lease(store, leader, how)
    before = snapshot(store)
    with pytest.raises(Fenced):
        LEADER_WRITES[write](store, stale, base)
    assert snapshot(store) == before


# -- dispatch --------------------------------------------------------------------------------------


def test_dispatch_queued_creates_run_and_moves_state(
    store: Store, leader: Lease, base: datetime
) -> None:
    slot = base + 10 * MINUTE
    before = store.now()
    result = dispatch_one(
        store,
        leader,
        item("alpha", slot, next_due=base + 11 * MINUTE, queue="reports", max_attempts=3),
    )
    after = store.now()
    run_id = slot_id("alpha", slot)
    assert result.status is DispatchStatus.QUEUED
    assert result.run_id == run_id
    assert result.dispatched_at is not None
    assert before <= result.dispatched_at <= after
    run = live(store, run_id)
    assert run.state is RunState.QUEUED
    assert (run.job, run.slot, run.manual) == ("alpha", slot, False)
    assert (run.queue, run.digest, run.max_attempts) == ("reports", DIGEST, 3)
    assert run.epoch == leader.epoch
    assert run.attempt == 0
    assert run.not_before == slot
    assert before <= run.created_at <= after
    assert (run.started_at, run.finished_at, run.worker) == (None, None, None)
    state = job(store, "alpha")
    assert (state.watermark, state.last_slot, state.next_due) == (slot, slot, base + 11 * MINUTE)
    assert state.active == 1
    assert store.live_runs("alpha") == [run]
    assert depth(store, "reports") == 1
    assert store.history("alpha", 10) == []


def test_dispatch_same_slot_twice_is_duplicate(store: Store, leader: Lease, base: datetime) -> None:
    slot = item("alpha", base + 10 * MINUTE)
    run_id = queued(store, leader, slot)
    state = job(store, "alpha")
    runs = store.live_runs()
    assert dispatch_one(store, leader, slot).status is DispatchStatus.DUPLICATE
    statuses = [r.status for r in store.dispatch(leader, [slot, slot])]
    assert statuses == [DispatchStatus.DUPLICATE, DispatchStatus.DUPLICATE]
    # The fingerprint check comes first: a mismatching repeat is UNKNOWN_JOB, not DUPLICATE.
    assert (
        dispatch_one(store, leader, replace(slot, fingerprint="fp-x")).status
        is DispatchStatus.UNKNOWN_JOB
    )
    assert store.live_runs() == runs
    assert [r.run_id for r in runs] == [run_id]
    assert job(store, "alpha") == state
    assert depth(store) == 1


def test_a_repeated_dispatch_answers_with_the_first_decisions_instant(
    store: Store, leader: Lease, base: datetime
) -> None:
    """A retried batch gets the answer of its first call: the run id and when it was decided
    (what lateness is measured from), not the instant of the retry."""
    first = dispatch_one(store, leader, item("alpha", base + 10 * MINUTE))
    assert first.dispatched_at is not None
    wait_past(store, first.dispatched_at)
    [again, fresh] = store.dispatch(
        leader, [item("alpha", base + 10 * MINUTE), item("beta", base + 10 * MINUTE)]
    )
    assert again == replace(first, status=DispatchStatus.DUPLICATE)
    assert fresh.dispatched_at is not None
    assert fresh.dispatched_at > first.dispatched_at


def test_dispatch_at_or_below_watermark_is_stale(
    store: Store, leader: Lease, base: datetime
) -> None:
    assert dispatch_one(store, leader, item("alpha", base)).status is DispatchStatus.STALE
    assert dispatch_one(store, leader, item("alpha", base - MINUTE)).status is DispatchStatus.STALE
    queued(store, leader, item("alpha", base + 20 * MINUTE))
    before = snapshot(store)
    # Never dispatched (no guard), but at or before the watermark the dispatch above moved.
    for at in (base + 10 * MINUTE, base + 20 * MINUTE - timedelta(microseconds=1)):
        assert dispatch_one(store, leader, item("alpha", at)).status is DispatchStatus.STALE
    assert snapshot(store) == before


def test_dispatch_future_slot_is_early_and_records_nothing(
    store: Store, leader: Lease, base: datetime
) -> None:
    before = snapshot(store)
    result = dispatch_one(store, leader, item("alpha", store.now() + timedelta(hours=1)))
    assert result.status is DispatchStatus.EARLY
    assert snapshot(store) == before


def test_dispatch_early_slot_runs_once_it_is_due(
    store: Store, leader: Lease, base: datetime
) -> None:
    slot = item("alpha", store.now() + timedelta(milliseconds=400))
    assert dispatch_one(store, leader, slot).status is DispatchStatus.EARLY
    wait_past(store, slot.slot)
    # EARLY wrote neither a guard nor the watermark, so the due slot is dispatched normally.
    queued(store, leader, slot)


def test_dispatch_unknown_job_or_fingerprint_mismatch(
    store: Store, leader: Lease, base: datetime
) -> None:
    before = snapshot(store)
    slot = base + 10 * MINUTE
    assert dispatch_one(store, leader, item("nope", slot)).status is DispatchStatus.UNKNOWN_JOB
    mismatch = item("alpha", slot, fingerprint="fp-other")
    assert dispatch_one(store, leader, mismatch).status is DispatchStatus.UNKNOWN_JOB
    # UNKNOWN_JOB is decided before EARLY.
    future = item("nope", store.now() + timedelta(hours=1))
    assert dispatch_one(store, leader, future).status is DispatchStatus.UNKNOWN_JOB
    assert snapshot(store) == before
    assert "nope" not in store.job_states()
    queued(store, leader, item("alpha", slot))  # the mismatch consumed nothing


def test_dispatch_batch_results_in_input_order_each_item_atomic(
    store: Store, leader: Lease, base: datetime
) -> None:
    slot = base + 10 * MINUTE
    batch = [
        item("alpha", slot),
        item("alpha", slot),  # the guard written by the first item is seen by this one
        item("beta", base),
        item("gamma", store.now() + timedelta(hours=1)),
        item("nope", slot),
        item("beta", slot, fingerprint="fp-other"),
        item("beta", slot, queue="reports"),
    ]
    results = store.dispatch(leader, batch)
    assert [r.status for r in results] == [
        DispatchStatus.QUEUED,
        DispatchStatus.DUPLICATE,
        DispatchStatus.STALE,
        DispatchStatus.EARLY,
        DispatchStatus.UNKNOWN_JOB,
        DispatchStatus.UNKNOWN_JOB,
        DispatchStatus.QUEUED,
    ]
    assert results[0].run_id == slot_id("alpha", slot)
    assert results[6].run_id == slot_id("beta", slot)
    assert sorted(r.run_id for r in store.live_runs()) == [
        slot_id("alpha", slot),
        slot_id("beta", slot),
    ]
    assert (depth(store), depth(store, "reports")) == (1, 1)
    assert job(store, "gamma").watermark == base


def test_dispatch_overlap_skip_records_skipped(store: Store, leader: Lease, base: datetime) -> None:
    first, second = base + 10 * MINUTE, base + 20 * MINUTE
    run_id = queued(store, leader, item("alpha", first, overlap="skip"))
    claim = claim_one(store)
    assert claim.run.run_id == run_id
    skip = item("alpha", second, overlap="skip", next_due=base + 30 * MINUTE)
    assert dispatch_one(store, leader, skip).status is DispatchStatus.SKIPPED
    assert [r.run_id for r in store.live_runs("alpha")] == [run_id]
    [entry] = store.history("alpha", 10)
    assert entry.state is Outcome.SKIPPED
    assert (entry.run_id, entry.job, entry.slot, entry.manual) == (
        slot_id("alpha", second),
        "alpha",
        second,
        False,
    )
    state = job(store, "alpha")
    # last_slot is only set for QUEUED and WAITING; the watermark moves for every decided slot.
    assert (state.watermark, state.last_slot, state.next_due) == (
        second,
        first,
        base + 30 * MINUTE,
    )
    assert state.active == 1
    assert dispatch_one(store, leader, skip).status is DispatchStatus.DUPLICATE
    assert len(store.history("alpha", 10)) == 1


def test_dispatch_overlap_skip_counts_a_queued_run_as_active(
    store: Store, leader: Lease, base: datetime
) -> None:
    """``active`` is "queued, waiting or running": an unclaimed earlier run blocks too."""
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, overlap="skip"))
    result = dispatch_one(store, leader, item("alpha", base + 20 * MINUTE, overlap="skip"))
    assert result.status is DispatchStatus.SKIPPED
    assert [r.run_id for r in store.live_runs("alpha")] == [run_id]
    assert depth(store) == 1


def test_dispatch_overlap_queue_waits_then_is_promoted(
    store: Store, leader: Lease, base: datetime
) -> None:
    s1, s2, s3 = (base + k * MINUTE for k in (10, 20, 30))
    first = queued(store, leader, item("alpha", s1, overlap="queue"))
    claim = claim_one(store)
    assert claim.run.run_id == first
    for slot in (s2, s3):
        result = dispatch_one(store, leader, item("alpha", slot, overlap="queue"))
        assert result.status is DispatchStatus.WAITING
        assert result.run_id == slot_id("alpha", slot)
        assert live(store, result.run_id).state is RunState.WAITING
    state = job(store, "alpha")
    assert (state.watermark, state.last_slot, state.active) == (s3, s3, 3)
    assert [(r.state, r.epoch) for r in store.live_runs("alpha")] == [
        (RunState.RUNNING, leader.epoch),
        (RunState.WAITING, leader.epoch),
        (RunState.WAITING, leader.epoch),
    ]
    assert depth(store) == 0  # waiting runs are not in the queue
    assert store.claim("worker-2", ["default"], new_token(), ATTEMPT_TTL, 0) is None
    assert store.finish(first, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    # Only the oldest waiting run is released.
    assert live(store, slot_id("alpha", s2)).state is RunState.QUEUED
    assert live(store, slot_id("alpha", s3)).state is RunState.WAITING
    assert depth(store) == 1
    second = claim_one(store, worker="worker-2")
    assert (second.run.run_id, second.attempt) == (slot_id("alpha", s2), 1)
    assert store.claim("worker-3", ["default"], new_token(), ATTEMPT_TTL, 0) is None


def test_dispatch_overlap_allow_runs_side_by_side(
    store: Store, leader: Lease, base: datetime
) -> None:
    first = queued(store, leader, item("alpha", base + 10 * MINUTE))
    assert claim_one(store).run.run_id == first
    second = queued(store, leader, item("alpha", base + 20 * MINUTE))
    assert [r.run_id for r in store.live_runs("alpha")] == [first, second]
    assert job(store, "alpha").active == 2
    assert claim_one(store, worker="worker-2").run.run_id == second


def test_dispatch_paused_job_consumes_slot_records_nothing(
    store: Store, leader: Lease, base: datetime
) -> None:
    paused = store.set_paused("alpha", True)
    assert paused.paused
    slot = base + 10 * MINUTE
    result = dispatch_one(store, leader, item("alpha", slot, next_due=base + 11 * MINUTE))
    assert result.status is DispatchStatus.PAUSED
    state = job(store, "alpha")
    assert (state.watermark, state.last_slot, state.next_due) == (slot, None, base + 11 * MINUTE)
    assert state.paused
    assert state.active == 0
    assert store.live_runs() == []
    assert store.history("alpha", 10) == []
    assert depth(store) == 0
    assert store.run(slot_id("alpha", slot)) is None
    assert dispatch_one(store, leader, item("alpha", slot)).status is DispatchStatus.DUPLICATE


def test_resume_moves_watermark_to_now(store: Store, leader: Lease, base: datetime) -> None:
    store.set_paused("alpha", True)
    before = store.now()
    resumed = store.set_paused("alpha", False)
    assert not resumed.paused
    assert resumed.watermark is not None
    assert resumed.watermark >= before
    assert job(store, "alpha") == resumed
    # A slot from the paused period never runs afterwards.
    result = dispatch_one(store, leader, item("alpha", before - timedelta(seconds=1)))
    assert result.status is DispatchStatus.STALE


def test_pause_before_first_load_creates_state_and_survives_sync(
    store: Store, base: datetime
) -> None:
    state = store.set_paused("delta", True)
    assert (state.name, state.fingerprint, state.paused) == ("delta", "", True)
    lease = store.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease is not None
    [synced] = store.sync_jobs(
        lease, [JobSync(name="delta", fingerprint=FP, next_due=base + MINUTE)], base
    )
    assert (synced.fingerprint, synced.paused, synced.watermark) == (FP, True, base)
    result = dispatch_one(store, lease, item("delta", base + 10 * MINUTE))
    assert result.status is DispatchStatus.PAUSED


def test_dispatch_guard_lives_at_least_guard_ttl(
    store: Store, leader: Lease, base: datetime
) -> None:
    """Backend-neutral: within ``guard_ttl`` a repeat is DUPLICATE (guard seen), not STALE."""
    slot = item("alpha", base + 10 * MINUTE, guard_ttl=timedelta(seconds=1))
    result = dispatch_one(store, leader, slot)
    assert result.status is DispatchStatus.QUEUED
    assert result.dispatched_at is not None
    wait_past(store, result.dispatched_at + timedelta(milliseconds=700))
    assert dispatch_one(store, leader, slot).status is DispatchStatus.DUPLICATE


def test_dispatch_guard_expiry_is_at_least_guard_ttl(
    store: Store, store_kind: str, leader: Lease, base: datetime, request: pytest.FixtureRequest
) -> None:
    """BACKEND-SPECIFIC peek: the guard's expiry (Redis key TTL, SQLite row) is >= ``guard_ttl``."""
    guard_ttl = timedelta(hours=48)  # "2 periods" of a daily job
    queued(store, leader, item("alpha", base + 10 * MINUTE, guard_ttl=guard_ttl))
    slack = 60_000  # ms: time spent since the dispatch
    wanted_ms = guard_ttl // timedelta(milliseconds=1) - slack
    if store_kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()
        keys = list(client.scan_iter(match="*guard*"))
        assert keys, "no Redis key containing 'guard' after a dispatch"
        pttls = {key: int(client.pttl(key)) for key in keys}
        assert max(pttls.values()) >= wanted_ms, pttls
        return
    if store_kind == "postgres":
        database = request.getfixturevalue("postgres_db")
        namespace = store._target.schema  # type: ignore[attr-defined]
        with database.connect() as conn:
            rows = conn.execute(
                f'SELECT slot, expires_at FROM "{namespace}".guards WHERE job = %s', ("alpha",)
            ).fetchall()
        now_us = to_micros(store.now())
        assert rows, "no guard row after a dispatch"
        assert max(expires - now_us for _, expires in rows) // 1000 >= wanted_ms, rows
        return
    path = request.getfixturevalue("tmp_path") / "state.db"
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT slot, expires_at FROM guards WHERE job = 'alpha'").fetchall()
    now_us = to_micros(store.now())
    assert rows, "no guard row after a dispatch"
    assert max(expires - now_us for _, expires in rows) // 1000 >= wanted_ms, rows


# -- sync_jobs and edits -----------------------------------------------------------------------


def test_sync_jobs_creates_new_jobs_at_load_instant(store: Store, base: datetime) -> None:
    lease = store.acquire_lease("node-a", new_token(), LEASE_TTL)
    assert lease is not None
    jobs = [
        JobSync(name="zeta", fingerprint="fp-z", next_due=base + 5 * MINUTE),
        JobSync(name="alpha", fingerprint="fp-a", next_due=None),
    ]
    states = store.sync_jobs(lease, jobs, base)
    assert states == [
        JobState(name="zeta", fingerprint="fp-z", watermark=base, last_slot=None,
                 next_due=base + 5 * MINUTE),
        JobState(name="alpha", fingerprint="fp-a", watermark=base, last_slot=None, next_due=None),
    ]  # fmt: skip
    assert store.job_states() == {s.name: s for s in states}


def test_sync_jobs_same_fingerprint_leaves_state_unchanged(
    store: Store, leader: Lease, base: datetime
) -> None:
    queued(store, leader, item("alpha", base + 10 * MINUTE))
    before = store.job_states()
    later = base + 30 * MINUTE
    states = store.sync_jobs(
        leader,
        [JobSync(name=name, fingerprint=FP, next_due=later + MINUTE) for name in JOBS],
        later,
    )
    assert states == [before[name] for name in JOBS]
    assert store.job_states() == before
    # The leader catches up from the watermark: a slot before the new load instant still runs.
    queued(store, leader, item("beta", base + 20 * MINUTE))


def test_sync_jobs_edit_moves_watermark_keeps_pause_and_outcome(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE))
    assert store.finish(run_id, claim_one(store).token, SUCCESS) is FinishStatus.ACCEPTED
    store.set_paused("alpha", True)
    before = job(store, "alpha")
    loaded = base + 30 * MINUTE
    [edited] = store.sync_jobs(
        leader, [JobSync(name="alpha", fingerprint="fp-2", next_due=loaded + MINUTE)], loaded
    )
    assert edited == replace(before, fingerprint="fp-2", watermark=loaded, next_due=loaded + MINUTE)
    assert edited.paused
    assert edited.last_outcome is Outcome.SUCCEEDED
    assert job(store, "alpha") == edited


def test_sync_jobs_edit_never_moves_watermark_back(
    store: Store, leader: Lease, base: datetime
) -> None:
    slot = base + 40 * MINUTE
    queued(store, leader, item("alpha", slot))
    [edited] = store.sync_jobs(
        leader,
        [JobSync(name="alpha", fingerprint="fp-2", next_due=base + 31 * MINUTE)],
        base + 30 * MINUTE,
    )
    assert (edited.fingerprint, edited.watermark, edited.next_due) == (
        "fp-2",
        slot,
        base + 31 * MINUTE,
    )


def test_edited_job_never_fires_early(store: Store, leader: Lease, base: datetime) -> None:
    loaded = base + 30 * MINUTE
    store.sync_jobs(leader, [JobSync(name="beta", fingerprint="fp-2", next_due=loaded)], loaded)
    for at in (base + 20 * MINUTE, loaded):  # before and at the load instant: never
        assert dispatch_one(store, leader, item("beta", at, fingerprint="fp-2")).status is (
            DispatchStatus.STALE
        )
    after = loaded + timedelta(seconds=1)
    old = item("beta", after)  # the old definition is no longer known
    assert dispatch_one(store, leader, old).status is DispatchStatus.UNKNOWN_JOB
    queued(store, leader, item("beta", after, fingerprint="fp-2"))


def test_retire_jobs_clears_fingerprints_and_readd_is_new(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("beta", base + 10 * MINUTE))
    assert store.finish(run_id, claim_one(store).token, SUCCESS) is FinishStatus.ACCEPTED
    alpha = job(store, "alpha")
    retired = store.retire_jobs(leader, ["alpha"])
    assert sorted(retired) == ["beta", "gamma"]
    states = store.job_states()
    assert set(states) == set(JOBS)  # retired states are kept
    assert states["alpha"] == alpha
    assert (states["beta"].fingerprint, states["gamma"].fingerprint) == ("", "")
    assert [h.run_id for h in store.history("beta", 10)] == [run_id]  # history kept
    late = base + 20 * MINUTE
    assert dispatch_one(store, leader, item("beta", late)).status is DispatchStatus.UNKNOWN_JOB
    # A retired job has no definition: even its cleared fingerprint matches nothing.
    blank = item("beta", late, fingerprint="")
    assert dispatch_one(store, leader, blank).status is DispatchStatus.UNKNOWN_JOB
    assert store.live_runs("beta") == []
    # Configured again with the very same fingerprint: new, no catch-up for the absence.
    readded = base + 60 * MINUTE
    [state] = store.sync_jobs(
        leader, [JobSync(name="beta", fingerprint=FP, next_due=readded + MINUTE)], readded
    )
    assert (state.fingerprint, state.watermark, state.next_due) == (FP, readded, readded + MINUTE)
    assert dispatch_one(store, leader, item("beta", late)).status is DispatchStatus.STALE
    queued(store, leader, item("beta", readded + MINUTE))


# -- advance ---------------------------------------------------------------------------------------


def test_advance_records_missed_slots_after_watermark(
    store: Store, leader: Lease, base: datetime
) -> None:
    missed = [base - MINUTE, base, base + MINUTE, base + 2 * MINUTE, base + 3 * MINUTE]
    state = store.advance(leader, "alpha", FP, missed, 7, base + 4 * MINUTE)
    assert (state.watermark, state.next_due, state.missed) == (
        base + 3 * MINUTE,
        base + 4 * MINUTE,
        7,
    )
    assert state.last_slot is None
    assert job(store, "alpha") == state
    entries = store.history("alpha", 10)
    assert all(e.state is Outcome.MISSED and e.job == "alpha" and not e.manual for e in entries)
    assert sorted(e.slot for e in entries) == missed[2:]  # only those after the watermark
    assert sorted(e.run_id for e in entries) == [slot_id("alpha", at) for at in missed[2:]]
    assert store.live_runs() == []
    assert depth(store) == 0
    assert dispatch_one(store, leader, item("alpha", base + 2 * MINUTE)).status is (
        DispatchStatus.STALE
    )
    queued(store, leader, item("alpha", base + 4 * MINUTE))


def test_advance_repeat_is_harmless(store: Store, leader: Lease, base: datetime) -> None:
    """A client retry of advance returns the same state: no second entry, no double count."""
    missed = [base + MINUTE, base + 2 * MINUTE]
    first = store.advance(leader, "alpha", FP, missed, 5, base + 3 * MINUTE)
    again = store.advance(leader, "alpha", FP, missed, 5, base + 3 * MINUTE)
    assert len(store.history("alpha", 10)) == 2
    assert again == first
    assert first.missed == 5


def test_advance_counter_accumulates_and_watermark_only_moves_forward(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.advance(leader, "alpha", FP, [base + 10 * MINUTE], 1, base + 11 * MINUTE)
    state = store.advance(leader, "alpha", FP, [base + 20 * MINUTE], 4, base + 21 * MINUTE)
    assert (state.missed, state.watermark) == (5, base + 20 * MINUTE)
    state = store.advance(leader, "alpha", FP, [base + 15 * MINUTE], 1, base + 21 * MINUTE)
    assert state.watermark == base + 20 * MINUTE
    assert sorted(e.slot for e in store.history("alpha", 10)) == [
        base + 10 * MINUTE,
        base + 20 * MINUTE,
    ]


def test_advance_fingerprint_mismatch_changes_nothing(
    store: Store, leader: Lease, base: datetime
) -> None:
    before = snapshot(store)
    state = store.advance(leader, "alpha", "fp-other", [base + MINUTE], 1, base + 2 * MINUTE)
    assert state == job(store, "alpha")
    assert snapshot(store) == before


def test_advance_of_a_job_without_state_changes_nothing_and_counts_its_runs(
    store: Store, leader: Lease, base: datetime
) -> None:
    """A manual run of a job no leader loaded leaves no state; the state advance answers still
    counts the run as active, as every other JobState does."""
    store.enqueue_manual("unloaded", "default", DIGEST, "allow", 1)
    before = snapshot(store)
    state = store.advance(leader, "unloaded", FP, [base + MINUTE], 1, base + 2 * MINUTE)
    assert (state.name, state.fingerprint, state.watermark, state.active) == (
        "unloaded",
        "",
        None,
        1,
    )
    assert snapshot(store) == before


def missed_slots(
    name: str, missed: Sequence[datetime], count: int, next_due: datetime | None
) -> MissedSlots:
    return MissedSlots(
        job=name, fingerprint=FP, missed=tuple(missed), missed_count=count, next_due=next_due
    )


def test_advance_many_is_advance_per_item_in_order(
    store: Store, leader: Lease, base: datetime, peers: Peers
) -> None:
    """The batch leaves exactly the state the same advance calls one by one leave (another
    store, same leader steps), including an item whose fingerprint does not match."""
    items = [
        missed_slots(
            "alpha", [base - MINUTE, base + MINUTE, base + 2 * MINUTE], 7, base + 3 * MINUTE
        ),
        replace(missed_slots("beta", [base + MINUTE], 1, None), fingerprint="fp-other"),
        missed_slots("gamma", [base + 5 * MINUTE], 2, base + 6 * MINUTE),
        missed_slots("alpha", [base + 4 * MINUTE], 1, base + 5 * MINUTE),  # the same job again
    ]
    states = store.advance_many(leader, items)
    other = peers()
    other_lease = lead(other, base)
    one_by_one = [
        other.advance(other_lease, i.job, i.fingerprint, i.missed, i.missed_count, i.next_due)
        for i in items
    ]
    assert [s.name for s in states] == ["alpha", "beta", "gamma", "alpha"]

    def comparable(state: JobState) -> JobState:
        return replace(state, last_outcome_at=None)

    assert [comparable(s) for s in states] == [comparable(s) for s in one_by_one]
    assert states[1] == job(store, "beta")  # unchanged: the fingerprint did not match
    assert (states[3].missed, states[3].watermark) == (8, base + 4 * MINUTE)
    for name in JOBS:
        assert [(e.slot, e.state) for e in store.history(name, 10)] == [
            (e.slot, e.state) for e in other.history(name, 10)
        ]
    assert store.advance_many(leader, []) == []


def test_advance_many_repeat_is_harmless(store: Store, leader: Lease, base: datetime) -> None:
    """A client retry of the batch: no second entry, no double count, the same states."""
    items = [
        missed_slots("alpha", [base + MINUTE, base + 2 * MINUTE], 5, base + 3 * MINUTE),
        missed_slots("beta", [base + MINUTE], 1, base + 2 * MINUTE),
    ]
    first = store.advance_many(leader, items)
    again = store.advance_many(leader, items)
    assert again == first
    assert (len(store.history("alpha", 10)), len(store.history("beta", 10))) == (2, 1)
    assert [s.missed for s in first] == [5, 1]


# -- workers: claim, heartbeat, finish ---------------------------------------------------------


def test_claim_takes_oldest_ready_run_by_not_before_then_creation(
    store: Store, leader: Lease, base: datetime
) -> None:
    alpha = queued(store, leader, item("alpha", base + 20 * MINUTE))
    beta = queued(store, leader, item("beta", base + 10 * MINUTE))
    gamma = queued(store, leader, item("gamma", base + 20 * MINUTE))
    order: list[str] = []
    for worker in ("worker-1", "worker-2", "worker-3"):
        token = new_token()
        before = store.now()
        claim = store.claim(worker, ["default"], token, ATTEMPT_TTL, 0)
        after = store.now()
        assert claim is not None
        assert claim.token == token
        assert claim.attempt == 1
        assert before + ATTEMPT_TTL <= claim.lease_expires_at <= after + ATTEMPT_TTL
        run = claim.run
        assert (run.state, run.attempt, run.worker) == (RunState.RUNNING, 1, worker)
        assert run.started_at is not None
        assert before <= run.started_at <= after
        assert live(store, run.run_id) == run
        order.append(run.run_id)
    assert order == [beta, alpha, gamma]
    assert store.claim("worker-4", ["default"], new_token(), ATTEMPT_TTL, 0) is None
    assert depth(store) == 0


def test_runs_one_call_created_for_one_instant_are_claimed_in_its_order(
    store: Store, leader: Lease, base: datetime
) -> None:
    """Created together, due together: creation order is the order of the call's items (here
    not the order of their run ids), in one queue and across queues."""
    slot = base + 10 * MINUTE
    items = [item(name, slot, queue=f"q-{name}") for name in ("gamma", "alpha", "beta")]
    results = store.dispatch(leader, items)
    assert [r.status for r in results] == [DispatchStatus.QUEUED] * 3
    claims = [claim_one(store, queues=["q-alpha", "q-beta", "q-gamma"]) for _ in items]
    assert [c.run.job for c in claims] == ["gamma", "alpha", "beta"]
    results = store.dispatch(leader, [item(name, slot + MINUTE) for name in ("beta", "alpha")])
    assert [r.status for r in results] == [DispatchStatus.QUEUED] * 2
    assert [claim_one(store).run.job for _ in results] == ["beta", "alpha"]


def test_concurrent_claims_hand_each_run_to_one_worker(peers: Peers) -> None:
    leader_side = peers()
    base = leader_side.now().replace(microsecond=0) - timedelta(hours=2)
    lease = lead(leader_side, base)
    expected = sorted(
        queued(leader_side, lease, item(name, base + k * MINUTE))
        for name in JOBS
        for k in range(1, 5)
    )
    workers = 6
    barrier = threading.Barrier(workers)

    def drain(index: int) -> list[str]:
        own = peers.open()
        got: list[str] = []
        try:
            barrier.wait(timeout=10)
            while (
                claim := own.claim(f"w{index}", ["default"], new_token(), ATTEMPT_TTL, 0)
            ) is not None:
                got.append(claim.run.run_id)
            return got
        finally:
            own.close()

    with ThreadPoolExecutor(workers) as pool:
        claimed = [run_id for got in pool.map(drain, range(workers)) for run_id in got]
    assert sorted(claimed) == expected  # every run once: none lost, none handed out twice
    assert all(r.state is RunState.RUNNING and r.attempt == 1 for r in leader_side.live_runs())


def test_concurrent_dispatch_of_one_slot_queues_it_once(peers: Peers) -> None:
    leader_side = peers()
    base = leader_side.now().replace(microsecond=0) - timedelta(hours=2)
    lease = lead(leader_side, base)
    slots = [item("alpha", base + 10 * MINUTE), item("beta", base + 10 * MINUTE)]
    racers = 6
    barrier = threading.Barrier(racers)

    def race(_index: int) -> list[DispatchStatus]:
        own = peers.open()  # e.g. a client retry racing the original call
        try:
            barrier.wait(timeout=10)
            return [r.status for r in own.dispatch(lease, slots)]
        finally:
            own.close()

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(race, range(racers)))
    for position in range(len(slots)):
        statuses = sorted(o[position].value for o in outcomes)
        assert statuses == ["duplicate"] * (racers - 1) + ["queued"], statuses
    assert sorted(r.run_id for r in leader_side.live_runs()) == [
        slot_id("alpha", base + 10 * MINUTE),
        slot_id("beta", base + 10 * MINUTE),
    ]
    assert depth(leader_side) == 2


def test_claim_only_from_given_queues(store: Store, leader: Lease, base: datetime) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, queue="reports"))
    assert store.claim("worker-1", ["default"], new_token(), ATTEMPT_TTL, 0) is None
    assert live(store, run_id).state is RunState.QUEUED
    claim = claim_one(store, queues=("other", "reports"))
    assert (claim.run.run_id, claim.run.queue) == (run_id, "reports")


def test_claim_with_nothing_ready_returns_none_within_wait(
    store: Store, leader: Lease, base: datetime
) -> None:
    # A run in another queue and a future retry are both "not ready" for this claim.
    queued(store, leader, item("alpha", base + 10 * MINUTE, queue="other"))
    for wait in (0.0, 0.2):
        started = time.monotonic()
        assert store.claim("worker-1", ["default"], new_token(), ATTEMPT_TTL, wait) is None
        assert time.monotonic() - started < 2.0


def test_claim_with_wait_picks_up_a_run_queued_meanwhile(peers: Peers) -> None:
    worker_side = peers()
    base = worker_side.now().replace(microsecond=0) - timedelta(hours=2)

    def leader_side() -> None:
        own = peers.open()
        try:
            lease = lead(own, base)
            time.sleep(0.3)  # the scenario (a run arriving mid-wait), not synchronisation
            queued(own, lease, item("alpha", base + 10 * MINUTE))
        finally:
            own.close()

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(leader_side)
        started = time.monotonic()
        claim = worker_side.claim("worker-1", ["default"], new_token(), ATTEMPT_TTL, 5.0)
        elapsed = time.monotonic() - started
        future.result(timeout=10)
    assert claim is not None, "claim(wait=5) missed a run queued during the wait"
    assert claim.run.run_id == slot_id("alpha", base + 10 * MINUTE)
    assert elapsed < 5.0


def test_heartbeat_extends_only_with_current_token(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE))
    claim = claim_one(store, ttl=SHORT_TTL)
    assert store.heartbeat(run_id, new_token(), ATTEMPT_TTL) is False
    assert store.heartbeat(run_id, claim.token, ATTEMPT_TTL) is True
    wait_past(store, claim.lease_expires_at)
    assert store.reap() == []  # extended: not reclaimed
    run = live(store, run_id)
    assert (run.state, run.attempt) == (RunState.RUNNING, 1)
    assert store.heartbeat(run_id, claim.token, ATTEMPT_TTL) is True


def test_finish_with_stale_token_records_nothing(
    store: Store, leader: Lease, base: datetime
) -> None:
    unclaimed = queued(store, leader, item("beta", base + 10 * MINUTE))
    before = snapshot(store)
    assert store.finish(unclaimed, new_token(), SUCCESS) is FinishStatus.STALE  # never claimed
    assert snapshot(store) == before
    running = queued(store, leader, item("alpha", base + 20 * MINUTE, queue="reports"))
    assert claim_one(store, queues=["reports"]).run.run_id == running
    before = snapshot(store)
    assert store.finish(running, new_token(), SUCCESS) is FinishStatus.STALE
    assert store.finish("alpha@1999-01-01T00:00:00Z", new_token(), SUCCESS) is FinishStatus.STALE
    assert snapshot(store) == before
    assert live(store, running).state is RunState.RUNNING
    assert job(store, "alpha").last_outcome is None


def test_finish_twice_with_same_token_is_accepted_once(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE))
    claim = claim_one(store)
    assert store.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    after_first = snapshot(store)
    assert store.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    assert snapshot(store) == after_first
    assert [e.run_id for e in store.history("alpha", 10)] == [run_id]
    assert store.heartbeat(run_id, claim.token, ATTEMPT_TTL) is False  # over: stop working
    assert store.hand_back(run_id, claim.token) is False
    assert snapshot(store) == after_first


def test_finish_success_records_outcome(store: Store, leader: Lease, base: datetime) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE))
    claim = claim_one(store)
    result = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="done\n")
    before = store.now()
    assert store.finish(run_id, claim.token, result) is FinishStatus.ACCEPTED
    after = store.now()
    [entry] = store.history("alpha", 10)
    assert entry.state is Outcome.SUCCEEDED
    assert (entry.run_id, entry.slot, entry.attempt, entry.worker) == (
        run_id,
        base + 10 * MINUTE,
        1,
        "worker-1",
    )
    assert (entry.exit_code, entry.output, entry.error) == (0, "done\n", None)
    assert entry.started_at == claim.run.started_at
    assert entry.finished_at is not None
    assert before <= entry.finished_at <= after
    assert entry.duration is not None
    assert store.run(run_id) == entry
    assert store.live_runs() == []
    state = job(store, "alpha")
    assert state.last_outcome is Outcome.SUCCEEDED
    assert state.last_outcome_at is not None
    assert before <= state.last_outcome_at <= after
    assert state.last_success_at == state.last_outcome_at
    assert state.active == 0


def test_finish_failed_with_attempts_left_retries_at_retry_at(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=2))
    first = claim_one(store)
    retry_at = store.now() + timedelta(seconds=1)
    failed = AttemptResult(outcome=Outcome.FAILED, exit_code=3, error="exit 3", retry_at=retry_at)
    assert store.finish(run_id, first.token, failed) is FinishStatus.RETRY
    [entry] = store.history("alpha", 10)
    assert (entry.run_id, entry.state, entry.attempt, entry.exit_code) == (
        run_id,
        Outcome.FAILED,
        1,
        3,
    )
    run = live(store, run_id)
    assert store.live_runs("alpha") == [run]  # run() prefers the live run to its history entry
    assert (run.state, run.not_before, run.attempt) == (RunState.QUEUED, retry_at, 1)
    assert depth(store) == 1  # counted although not ready yet
    assert job(store, "alpha").active == 1
    assert store.claim("worker-2", ["default"], new_token(), ATTEMPT_TTL, 0) is None
    assert store.now() < retry_at, "too slow to observe 'not claimable before retry_at'"
    second = wait_until(
        lambda: store.claim("worker-2", ["default"], new_token(), ATTEMPT_TTL, 0),
        what="the retry to become claimable",
    )
    assert second.run.run_id == run_id
    assert second.attempt == second.run.attempt == 2
    assert second.run.started_at is not None
    assert second.run.started_at >= retry_at
    # Attempt 1 is over: a client retry of its finish changes nothing (the same answer, RETRY, or
    # a refusal, STALE, are both documented) and a different late result from it is STALE.
    before = snapshot(store)
    assert store.finish(run_id, first.token, failed) in (FinishStatus.RETRY, FinishStatus.STALE)
    late = store.finish(run_id, first.token, SUCCESS)
    assert snapshot(store) == before
    assert late is FinishStatus.STALE
    # The last attempt fails: the run ends, even with a retry_at.
    last = replace(failed, exit_code=4, retry_at=store.now())
    assert store.finish(run_id, second.token, last) is FinishStatus.ACCEPTED
    assert [(e.attempt, e.state, e.exit_code) for e in store.history("alpha", 10)] == [
        (2, Outcome.FAILED, 4),
        (1, Outcome.FAILED, 3),
    ]
    final = live(store, run_id)  # the newest history entry
    assert (final.state, final.attempt) == (Outcome.FAILED, 2)
    state = job(store, "alpha")
    assert (state.last_outcome, state.active, state.last_success_at) == (Outcome.FAILED, 0, None)
    assert store.live_runs() == []


def test_finish_timed_out_with_attempts_left_retries(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=3))
    claim = claim_one(store)
    retry_at = store.now() + timedelta(hours=1)
    result = AttemptResult(outcome=Outcome.TIMED_OUT, retry_at=retry_at)
    assert store.finish(run_id, claim.token, result) is FinishStatus.RETRY
    assert [e.state for e in store.history("alpha", 10)] == [Outcome.TIMED_OUT]
    run = live(store, run_id)
    assert (run.state, run.not_before) == (RunState.QUEUED, retry_at)
    assert store.claim("worker-1", ["default"], new_token(), ATTEMPT_TTL, 0) is None


def test_claim_with_wait_returns_a_retry_that_becomes_ready_meanwhile(
    store: Store, leader: Lease, base: datetime
) -> None:
    """Readiness by time (``not_before``) must wake a blocking claim, not only a new message."""
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=2))
    first = claim_one(store)
    retry_at = store.now() + timedelta(milliseconds=500)
    retry = AttemptResult(outcome=Outcome.FAILED, exit_code=1, retry_at=retry_at)
    assert store.finish(run_id, first.token, retry) is FinishStatus.RETRY
    started = time.monotonic()
    second = store.claim("worker-2", ["default"], new_token(), ATTEMPT_TTL, 5.0)
    elapsed = time.monotonic() - started
    assert second is not None, "claim(wait=5) missed a retry that became ready after ~0.5 s"
    assert (second.run.run_id, second.attempt) == (run_id, 2)
    assert second.run.started_at is not None
    assert second.run.started_at >= retry_at
    assert elapsed < 4.0


@pytest.mark.parametrize(
    "case",
    [
        pytest.param((Outcome.FAILED, True, 1), id="failed-no-attempts-left"),
        pytest.param((Outcome.FAILED, False, 3), id="failed-without-retry-at"),
        pytest.param((Outcome.CONFIG_MISMATCH, True, 3), id="config-mismatch-never-retried"),
    ],
)
def test_finish_without_retry_ends_the_run(
    store: Store, leader: Lease, base: datetime, case: tuple[Outcome, bool, int]
) -> None:
    outcome, retry, max_attempts = case
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=max_attempts))
    claim = claim_one(store)
    retry_at = store.now() + MINUTE if retry else None
    result = AttemptResult(outcome=outcome, exit_code=1, error="boom", retry_at=retry_at)
    before = store.now()
    assert store.finish(run_id, claim.token, result) is FinishStatus.ACCEPTED
    [entry] = store.history("alpha", 10)
    assert (entry.run_id, entry.state, entry.attempt, entry.error) == (run_id, outcome, 1, "boom")
    assert store.live_runs() == []
    assert depth(store) == 0
    state = job(store, "alpha")
    assert state.last_outcome is outcome
    assert state.last_outcome_at is not None
    assert state.last_outcome_at >= before
    assert (state.last_success_at, state.active) == (None, 0)


# -- reclaim and hand back ---------------------------------------------------------------------


def test_reap_reclaims_expired_attempt(store: Store, leader: Lease, base: datetime) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=3))
    first = claim_one(store, ttl=SHORT_TTL)
    assert store.reap() == []  # not expired yet
    wait_past(store, first.lease_expires_at)
    assert store.reap() == [run_id]
    assert store.reap() == []
    run = live(store, run_id)
    assert (run.state, run.attempt) == (RunState.QUEUED, 1)
    assert store.heartbeat(run_id, first.token, ATTEMPT_TTL) is False
    assert store.finish(run_id, first.token, SUCCESS) is FinishStatus.STALE
    assert store.history("alpha", 10) == []
    second = claim_one(store, worker="worker-2")
    assert second.token != first.token
    assert (second.run.run_id, second.attempt, second.run.worker) == (run_id, 2, "worker-2")
    assert store.finish(run_id, first.token, SUCCESS) is FinishStatus.STALE
    assert store.finish(run_id, second.token, SUCCESS) is FinishStatus.ACCEPTED


def test_claim_reaps_expired_attempts_before_looking(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=2))
    first = claim_one(store, ttl=SHORT_TTL)
    wait_past(store, first.lease_expires_at)
    second = claim_one(store, worker="worker-2")  # no explicit reap()
    assert (second.run.run_id, second.attempt) == (run_id, 2)
    assert store.heartbeat(run_id, first.token, ATTEMPT_TTL) is False


def test_reap_with_no_attempts_left_ends_run_lost(
    store: Store, leader: Lease, base: datetime
) -> None:
    s1, s2 = base + 10 * MINUTE, base + 20 * MINUTE
    first = queued(store, leader, item("alpha", s1, overlap="queue"))
    claim = claim_one(store, ttl=SHORT_TTL)
    waiting = dispatch_one(store, leader, item("alpha", s2, overlap="queue"))
    assert waiting.status is DispatchStatus.WAITING
    wait_past(store, claim.lease_expires_at)
    before = store.now()
    assert store.reap() == [first]
    [entry] = store.history("alpha", 10)
    assert (entry.run_id, entry.state, entry.attempt) == (first, Outcome.LOST, 1)
    assert live(store, first) == entry
    state = job(store, "alpha")
    assert state.last_outcome is Outcome.LOST
    assert state.last_outcome_at is not None
    assert state.last_outcome_at >= before
    assert state.active == 1
    assert store.finish(first, claim.token, SUCCESS) is FinishStatus.STALE
    # The waiting successor is released, as after finish.
    successor = claim_one(store, worker="worker-2")
    assert successor.run.run_id == slot_id("alpha", s2)


def test_hand_back_returns_run_without_spending_an_attempt(
    store: Store, leader: Lease, base: datetime
) -> None:
    run_id = queued(store, leader, item("alpha", base + 10 * MINUTE, max_attempts=1))
    claim = claim_one(store)
    assert store.hand_back(run_id, new_token()) is False
    assert live(store, run_id).state is RunState.RUNNING
    assert store.hand_back(run_id, claim.token) is True
    run = live(store, run_id)
    assert (run.state, run.attempt) == (RunState.QUEUED, 0)
    assert depth(store) == 1
    assert store.heartbeat(run_id, claim.token, ATTEMPT_TTL) is False
    assert store.finish(run_id, claim.token, SUCCESS) is FinishStatus.STALE
    store.hand_back(run_id, claim.token)  # a repeat must not give back a second attempt
    assert (live(store, run_id).state, live(store, run_id).attempt) == (RunState.QUEUED, 0)
    again = claim_one(store, worker="worker-2")
    assert (again.run.run_id, again.attempt) == (run_id, 1)
    assert store.finish(run_id, again.token, SUCCESS) is FinishStatus.ACCEPTED


# -- manual runs -----------------------------------------------------------------------------------


def test_enqueue_manual_creates_claimable_run_consuming_no_slot(
    store: Store, leader: Lease, base: datetime
) -> None:
    queued(store, leader, item("alpha", base + 10 * MINUTE))
    assert claim_one(store).run.job == "alpha"
    state = job(store, "alpha")
    before = store.now()
    run = store.enqueue_manual("alpha", "default", DIGEST, "allow", 2)
    after = store.now()
    assert run.run_id.startswith("alpha@")
    assert "~manual" in run.run_id
    assert run.run_id != slot_id("alpha", run.slot)
    assert (run.manual, run.state, run.epoch, run.attempt) == (True, RunState.QUEUED, 0, 0)
    assert (run.job, run.queue, run.digest, run.max_attempts) == ("alpha", "default", DIGEST, 2)
    assert before <= run.created_at <= after
    assert live(store, run.run_id) == run
    other = store.enqueue_manual("alpha", "default", DIGEST, "allow", 2)
    assert other.run_id != run.run_id
    after_state = job(store, "alpha")
    assert (after_state.watermark, after_state.last_slot, after_state.next_due) == (
        state.watermark,
        state.last_slot,
        state.next_due,
    )
    assert after_state.active == 3
    assert claim_one(store, worker="worker-2").run.run_id == run.run_id
    # The slot a manual run happens to be "at" is not guarded: it can still be dispatched.
    queued(store, leader, item("alpha", base + 20 * MINUTE))


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_enqueue_manual_waits_behind_active_run(
    store: Store, leader: Lease, base: datetime, overlap: Overlap
) -> None:
    first = queued(store, leader, item("alpha", base + 10 * MINUTE))
    claim = claim_one(store)
    manual = store.enqueue_manual("alpha", "default", DIGEST, overlap, 1)
    assert manual.state is RunState.WAITING
    assert store.history("alpha", 10) == []  # not skipped
    assert store.claim("worker-2", ["default"], new_token(), ATTEMPT_TTL, 0) is None
    assert store.finish(first, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    assert live(store, manual.run_id).state is RunState.QUEUED
    assert claim_one(store, worker="worker-2").run.run_id == manual.run_id


# -- reading ---------------------------------------------------------------------------------------


def test_history_newest_first_trimmed_to_limit(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    (tmp_path / "h3").mkdir()
    small = make_store(store_kind, request, tmp_path / "h3", history=3)
    try:
        base = small.now().replace(microsecond=0) - timedelta(hours=2)
        lease = lead(small, base)
        run_ids = []
        for k in range(1, 6):
            run_id = queued(small, lease, item("alpha", base + k * MINUTE))
            assert small.finish(run_id, claim_one(small).token, SUCCESS) is FinishStatus.ACCEPTED
            run_ids.append(run_id)
        other = queued(small, lease, item("beta", base + MINUTE))
        assert small.finish(other, claim_one(small).token, SUCCESS) is FinishStatus.ACCEPTED
        assert [e.run_id for e in small.history("alpha", 10)] == run_ids[:1:-1]
        assert [e.run_id for e in small.history("alpha", 2)] == run_ids[:2:-1]
        assert [e.run_id for e in small.history("beta", 10)] == [other]  # trimmed per job
        assert small.run(run_ids[0]) is None  # trimmed away, not live
        missed = [base + k * MINUTE for k in range(1, 6)]
        small.advance(lease, "gamma", FP, missed, 5, None)  # missed entries are trimmed too
        assert sorted(e.slot for e in small.history("gamma", 10)) == missed[2:]
        newest = small.run(run_ids[-1])
        assert newest is not None
        assert newest.state is Outcome.SUCCEEDED
    finally:
        small.close()


def test_a_repeated_finish_gets_its_answer_after_its_history_entry_is_trimmed(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A client retrying a finish (its reply was lost) gets the first answer for a day, even when
    newer entries (here, missed slots recorded meanwhile) trimmed the attempt's history entry."""
    (tmp_path / "h1").mkdir()
    small = make_store(store_kind, request, tmp_path / "h1", history=1)
    try:
        base = small.now().replace(microsecond=0) - timedelta(hours=2)
        lease = lead(small, base)
        run_id = queued(small, lease, item("alpha", base + MINUTE))
        claim = claim_one(small)
        assert small.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
        small.advance(lease, "alpha", FP, [base + 2 * MINUTE], 1, None)
        assert [e.run_id for e in small.history("alpha", 10)] != [run_id]  # trimmed away
        assert small.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
        failed = AttemptResult(outcome=Outcome.FAILED, exit_code=1)
        assert small.finish(run_id, claim.token, failed) is FinishStatus.STALE  # not a retry
        assert [e.state for e in small.history("alpha", 10)] == [Outcome.MISSED]
    finally:
        small.close()


def test_run_finds_live_runs_and_history_entries(
    store: Store, leader: Lease, base: datetime
) -> None:
    done = queued(store, leader, item("alpha", base + 10 * MINUTE))
    assert store.finish(done, claim_one(store).token, SUCCESS) is FinishStatus.ACCEPTED
    pending = queued(store, leader, item("alpha", base + 20 * MINUTE))
    done_record = live(store, done)
    assert (done_record.run_id, done_record.state) == (done, Outcome.SUCCEEDED)
    assert store.history("alpha", 1) == [done_record]
    pending_record = live(store, pending)
    assert (pending_record.run_id, pending_record.state) == (pending, RunState.QUEUED)
    assert store.run(slot_id("alpha", base + 30 * MINUTE)) is None
    assert store.run("nope@2026-01-01T00:00:00Z") is None


def test_live_runs_filters_by_job_oldest_first(store: Store, leader: Lease, base: datetime) -> None:
    a1 = queued(store, leader, item("alpha", base + 10 * MINUTE))
    b1 = queued(store, leader, item("beta", base + 11 * MINUTE))
    a2 = queued(store, leader, item("alpha", base + 12 * MINUTE, queue="reports"))
    assert claim_one(store).run.run_id == a1  # running runs are live too
    assert [r.run_id for r in store.live_runs("alpha")] == [a1, a2]
    assert [r.run_id for r in store.live_runs("beta")] == [b1]
    assert store.live_runs("gamma") == []
    assert store.live_runs("nope") == []
    assert [r.run_id for r in store.live_runs()] == [a1, b1, a2]
    assert [r.state for r in store.live_runs()] == [
        RunState.RUNNING,
        RunState.QUEUED,
        RunState.QUEUED,
    ]


def test_queue_depths_counts_queued_runs_per_queue(
    store: Store, leader: Lease, base: datetime
) -> None:
    assert {q: n for q, n in store.queue_depths().items() if n} == {}
    queued(store, leader, item("alpha", base + 10 * MINUTE, overlap="queue"))
    queued(store, leader, item("beta", base + 10 * MINUTE))
    queued(store, leader, item("gamma", base + 10 * MINUTE, queue="reports"))
    assert {q: n for q, n in store.queue_depths().items() if n} == {"default": 2, "reports": 1}
    assert claim_one(store).run.job == "alpha"  # running: no longer counted
    waiting = dispatch_one(store, leader, item("alpha", base + 20 * MINUTE, overlap="queue"))
    assert waiting.status is DispatchStatus.WAITING  # waiting: not counted
    assert {q: n for q, n in store.queue_depths().items() if n} == {"default": 1, "reports": 1}


def test_register_worker_and_workers_round_trip(store: Store) -> None:
    first = WorkerInfo(
        worker="host-a:101", queues=("default",), seen_at=store.now(), running=0, concurrency=4
    )
    store.register_worker(first)
    second = WorkerInfo(
        worker="host-b:202",
        queues=("default", "reports"),
        seen_at=store.now(),
        running=2,
        concurrency=8,
    )
    store.register_worker(second)
    seen = store.workers()
    assert [w.worker for w in seen] == ["host-b:202", "host-a:101"]  # newest first
    for got, sent in zip(seen, (second, first), strict=True):
        assert (got.queues, got.running, got.concurrency) == (
            sent.queues,
            sent.running,
            sent.concurrency,
        )
        assert abs(got.seen_at - sent.seen_at) < timedelta(seconds=5)
    store.register_worker(replace(first, seen_at=store.now(), running=3))
    seen = store.workers()
    assert [(w.worker, w.running) for w in seen] == [("host-a:101", 3), ("host-b:202", 2)]


def test_announce_and_presences_round_trip(store: Store) -> None:
    store.announce("host-a:1", "scheduler")
    store.announce("host-b:2", "scheduler")
    store.announce("host-b:2", "scheduler")  # a repeat only moves seen_at
    store.announce("host-c:3", "worker", stopped=True)
    seen = store.presences()
    assert [(p.member, p.role, p.stopped) for p in seen] == [
        ("host-c:3", "worker", True),
        ("host-b:2", "scheduler", False),
        ("host-a:1", "scheduler", False),
    ]  # newest first
    assert all(abs(store.now() - p.seen_at) < timedelta(seconds=5) for p in seen)
    assert seen[0].seen_at >= seen[1].seen_at >= seen[2].seen_at


def test_announce_replaces_the_members_previous_entry(peers: Peers) -> None:
    store = peers()
    store.announce("host-a:1", "scheduler")
    store.announce("host-b:2", "scheduler")
    store.announce("host-a:1", "scheduler", stopped=True)  # a clean stop, seen by everyone
    other = peers()
    assert [(p.member, p.stopped) for p in other.presences()] == [
        ("host-a:1", True),
        ("host-b:2", False),
    ]
    other.announce("host-a:1", "scheduler")  # the same member alive again: alive
    assert [(p.member, p.stopped) for p in store.presences()] == [
        ("host-a:1", False),
        ("host-b:2", False),
    ]


def test_state_is_shared_between_instances_and_survives_reopen(peers: Peers) -> None:
    first = peers.open()
    try:
        base = first.now().replace(microsecond=0) - timedelta(hours=2)
        lease = lead(first, base)
        run_id = queued(first, lease, item("alpha", base + 10 * MINUTE))
        first.set_paused("beta", True)
        seen = snapshot(first)
        leader_info = first.leader()
    finally:
        first.close()
    second = peers()
    assert snapshot(second) == seen
    assert second.leader() == leader_info
    assert job(second, "beta").paused  # the pause persists across restarts
    claim = claim_one(second)
    assert claim.run.run_id == run_id
    assert second.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    third = peers()
    assert [e.run_id for e in third.history("alpha", 10)] == [run_id]


# -- idempotency under repetition ----------------------------------------------------------------


def test_repeating_each_call_gives_the_documented_answer(store: Store, base: datetime) -> None:
    token = new_token()
    lease = store.acquire_lease("node-a", token, LEASE_TTL)
    assert lease is not None
    assert store.acquire_lease("node-a", token, LEASE_TTL) == lease
    renewed = store.renew_lease(lease, LEASE_TTL)
    again = store.renew_lease(lease, LEASE_TTL)
    assert renewed is not None
    assert again is not None
    assert (again.token, again.epoch) == (lease.token, lease.epoch)
    assert again.expires_at >= renewed.expires_at
    store.sync_jobs(lease, [JobSync(name=n, fingerprint=FP, next_due=None) for n in JOBS], base)
    assert store.sync_jobs(
        lease, [JobSync(name=n, fingerprint=FP, next_due=None) for n in JOBS], base
    ) == [job(store, n) for n in JOBS]

    slots = [
        item("alpha", base + 10 * MINUTE, max_attempts=2),
        item("beta", base + 10 * MINUTE, queue="reports"),
    ]
    first = store.dispatch(lease, slots)
    assert [r.status for r in first] == [DispatchStatus.QUEUED] * 2
    assert [r.status for r in store.dispatch(lease, slots)] == [DispatchStatus.DUPLICATE] * 2
    assert len(store.live_runs()) == 2

    claim_token = new_token()
    claim = store.claim("worker-1", ["default"], claim_token, SHORT_TTL, 0)
    repeat = store.claim("worker-1", ["default"], claim_token, SHORT_TTL, 0)
    assert claim is not None
    assert repeat is not None
    assert (repeat.run.run_id, repeat.attempt, repeat.token) == (
        claim.run.run_id,
        claim.attempt,
        claim.token,
    )
    assert [r.state for r in store.live_runs()] == [RunState.RUNNING, RunState.QUEUED]

    wait_past(store, max(claim.lease_expires_at, repeat.lease_expires_at))
    assert store.reap() == [claim.run.run_id]
    assert store.reap() == []
    second = claim_one(store, worker="worker-2")
    assert (second.run.run_id, second.attempt) == (claim.run.run_id, 2)
    assert store.finish(second.run.run_id, second.token, SUCCESS) is FinishStatus.ACCEPTED
    assert store.finish(second.run.run_id, second.token, SUCCESS) is FinishStatus.ACCEPTED
    assert [e.attempt for e in store.history(second.run.job, 10)] == [2]


# -- outbox ("Outbox" in the contract) -------------------------------------------------------------

FAILURE = AttemptResult(outcome=Outcome.FAILED, exit_code=3, output="disk full\n", error="exit 3")


def run_to_end(
    store: Store, lease: Lease, at: datetime, result: AttemptResult, name: str = "alpha"
) -> str:
    run_id = queued(store, lease, item(name, at))
    claim = claim_one(store)
    assert store.finish(run_id, claim.token, result) is FinishStatus.ACCEPTED
    return run_id


def test_outbox_event_is_written_with_the_outcome(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"failed", "recovered"})})
    assert store.events_due(10) == []
    run_id = run_to_end(store, leader, base + MINUTE, FAILURE)
    run_to_end(store, leader, base + MINUTE, FAILURE, name="beta")  # beta has no kinds
    [event] = store.events_due(10)
    assert (event.event_id, event.kind, event.job) == (f"{run_id}#1:failed", "failed", "alpha")
    assert (event.run.run_id, event.run.state, event.run.attempt) == (run_id, Outcome.FAILED, 1)
    assert (event.run.exit_code, event.run.output, event.run.error) == (3, "disk full\n", "exit 3")
    assert (event.attempts, event.done) == (0, ())
    assert store.outbox_stats() == OutboxStats(depth=1, dropped=0)
    # A client retrying the finish writes no second event.
    assert store.events_due(10) == [event]


def test_outbox_recovered_once_after_a_failure(store: Store, leader: Lease, base: datetime) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"failed", "recovered"})})
    run_to_end(store, leader, base + MINUTE, SUCCESS)  # a success after nothing: no news
    failed = run_to_end(store, leader, base + 2 * MINUTE, FAILURE)
    recovered = run_to_end(store, leader, base + 3 * MINUTE, SUCCESS)
    run_to_end(store, leader, base + 4 * MINUTE, SUCCESS)  # a success after a success
    kinds = [(event.kind, event.run.run_id) for event in store.events_due(10)]
    assert kinds == [("failed", failed), ("recovered", recovered)]


def test_outbox_no_event_for_an_attempt_that_will_be_retried(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"failed"})})
    run_id = queued(store, leader, item("alpha", base + MINUTE, max_attempts=2))
    claim = claim_one(store)
    retry = replace(FAILURE, retry_at=store.now())
    assert store.finish(run_id, claim.token, retry) is FinishStatus.RETRY
    assert store.events_due(10) == []
    second = claim_one(store)
    assert store.finish(run_id, second.token, retry) is FinishStatus.ACCEPTED
    assert [event.event_id for event in store.events_due(10)] == [f"{run_id}#2:failed"]


def test_outbox_event_for_a_lost_run(store: Store, leader: Lease, base: datetime) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"lost"})})
    run_id = queued(store, leader, item("alpha", base + MINUTE))
    claim = claim_one(store, ttl=SHORT_TTL)
    wait_past(store, claim.lease_expires_at)
    assert store.reap() == [run_id]
    assert store.reap() == []
    [event] = store.events_due(10)
    assert (event.kind, event.run.state, event.run.worker) == ("lost", Outcome.LOST, "worker-1")


def test_outbox_settle_retries_and_removes(store: Store, leader: Lease, base: datetime) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"failed"})})
    first = run_to_end(store, leader, base + MINUTE, FAILURE)
    second = run_to_end(store, leader, base + 2 * MINUTE, FAILURE)
    one, two = store.events_due(10)
    retry_at = store.now() + timedelta(milliseconds=300)
    for _ in range(2):  # absolute values: a repeat changes nothing more
        assert store.settle_event(one.event_id, 1, ["ops"], retry_at) is True
    [due] = store.events_due(10)
    assert due.run.run_id == second
    wait_past(store, retry_at)
    again, later = store.events_due(10)  # earliest due first
    assert (again.run.run_id, later.event_id) == (second, one.event_id)
    assert (later.attempts, later.done) == (1, ("ops",))
    assert store.settle_event(two.event_id, 1, ["ops", "mail"], None) is True
    assert store.settle_event(two.event_id, 1, ["ops", "mail"], None) is False
    assert [event.run.run_id for event in store.events_due(10)] == [first]
    assert store.events_due(0) == []
    assert store.outbox_stats() == OutboxStats(depth=1, dropped=0)


def test_outbox_is_bounded_and_counts_what_it_drops(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.outbox_limit = 2
    store.set_event_kinds(leader, {"alpha": frozenset({"failed"})})
    runs = [run_to_end(store, leader, base + n * MINUTE, FAILURE) for n in range(1, 5)]
    assert [event.run.run_id for event in store.events_due(10)] == runs[2:]
    assert store.outbox_stats() == OutboxStats(depth=2, dropped=2)


def test_outbox_event_carries_a_bounded_output_tail(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"failed"})})
    output = "é" * EVENT_OUTPUT + "the end\n"  # two bytes each: a cut may fall inside one
    run_to_end(store, leader, base + MINUTE, replace(FAILURE, output=output))
    [event] = store.events_due(10)
    assert event.run.output.endswith("the end\n")
    assert len(event.run.output.encode()) <= EVENT_OUTPUT
    assert output.endswith(event.run.output)


def test_set_event_kinds_is_fenced_and_replaces(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"failed"})})
    stale = replace(leader, token=new_token())
    with pytest.raises(Fenced):
        store.set_event_kinds(stale, {"beta": frozenset({"failed"})})
    store.set_event_kinds(leader, {"beta": frozenset({"failed"})})  # alpha has none now
    run_to_end(store, leader, base + MINUTE, FAILURE)
    beta = run_to_end(store, leader, base + MINUTE, FAILURE, name="beta")
    assert [event.run.run_id for event in store.events_due(10)] == [beta]


def test_outbox_started_event_with_the_claim(store: Store, leader: Lease, base: datetime) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"started", "failed"})})
    run_id = queued(store, leader, item("alpha", base + MINUTE))
    claim = claim_one(store)
    [started] = store.events_due(10)
    assert (started.event_id, started.kind) == (f"{run_id}#1:started", "started")
    assert (started.run.state, started.run.attempt, started.run.worker) == (
        RunState.RUNNING,
        1,
        "worker-1",
    )
    assert started.run.started_at == claim.run.started_at
    assert store.finish(run_id, claim.token, FAILURE) is FinishStatus.ACCEPTED
    assert [event.kind for event in store.events_due(10)] == ["started", "failed"]


def test_note_delivery_keeps_the_last_success_and_the_last_error(store: Store) -> None:
    assert store.deliveries() == []
    before = store.now()
    store.note_delivery("ops", None)
    store.note_delivery("mail", "smtp://mail.example:587 refused the login")
    store.note_delivery("ops", "x" * 600)
    mail, ops = store.deliveries()
    assert (mail.channel, mail.last_ok_at, mail.last_error) == (
        "mail",
        None,
        "smtp://mail.example:587 refused the login",
    )
    assert mail.last_error_at is not None
    assert mail.last_error_at >= before
    assert ops.channel == "ops"
    assert ops.last_ok_at is not None
    assert ops.last_error_at is not None
    assert before <= ops.last_ok_at <= ops.last_error_at
    assert ops.last_error == "x" * 500
    store.note_delivery("ops", None)
    again = {d.channel: d for d in store.deliveries()}["ops"]
    assert again.last_error == "x" * 500  # kept: the last error, and when
    assert again.last_ok_at is not None
    assert again.last_ok_at >= ops.last_error_at


def test_outbox_event_for_a_missed_slot(store: Store, leader: Lease, base: datetime) -> None:
    store.set_event_kinds(leader, {"alpha": frozenset({"missed"})})
    slots = [base + MINUTE, base + 2 * MINUTE]
    for _ in range(2):  # a repeat records nothing twice
        store.advance(leader, "alpha", FP, slots, 2, base + 3 * MINUTE)
    store.advance(leader, "beta", FP, slots, 2, base + 3 * MINUTE)  # beta has no kinds
    events = store.events_due(10)
    assert [(e.event_id, e.kind, e.job) for e in events] == [
        (f"{slot_id('alpha', slot)}#0:missed", "missed", "alpha") for slot in slots
    ]
    assert [(e.run.state, e.run.slot) for e in events] == [(Outcome.MISSED, s) for s in slots]


# -- runs executed by another system (Celery) -----------------------------------------------------


def external(executor: str, *, try_no: int = 0, job_name: str = "alpha") -> ExternalRun:
    slot = datetime(2026, 11, 27, 16, 30, tzinfo=UTC)
    return ExternalRun(
        run_id=slot_id(job_name, slot),
        job=job_name,
        slot=slot,
        attempt=2,
        epoch=7,
        queue="reports",
        try_no=try_no,
        executor=executor,
    )


def test_begin_external_lets_one_executor_execute_each_try(peers: Peers) -> None:
    first, second = peers(), peers()
    assert first.begin_external(external("celery@a:1"))
    assert first.begin_external(external("celery@a:1"))  # a client retry: the same answer
    # A redelivered or republished message, from any process: not executed again.
    assert not second.begin_external(external("celery@b:2"))
    # The other system's own retry is a new try: executed once too.
    assert second.begin_external(external("celery@b:2", try_no=1))
    assert not first.begin_external(external("celery@a:1", try_no=1))
    assert first.history("alpha", 10) == []  # beginning records no history


def test_end_external_records_one_history_entry_by_its_executor(store: Store) -> None:
    run = external("celery@a:1")
    failed = AttemptResult(outcome=Outcome.FAILED, error="ValueError: no template")
    assert not store.end_external(run, failed)  # never begun
    before = store.now()
    assert store.begin_external(run)
    assert not store.end_external(replace(run, executor="celery@b:2"), failed)
    assert store.end_external(run, failed)
    assert store.end_external(run, failed)  # a repeat: recorded once
    [entry] = store.history("alpha", 10)
    assert (entry.run_id, entry.job, entry.slot, entry.state) == (
        run.run_id,
        "alpha",
        run.slot,
        Outcome.FAILED,
    )
    assert (entry.attempt, entry.epoch, entry.queue, entry.worker) == (
        2,
        7,
        "reports",
        run.executor,
    )
    assert (entry.error, entry.manual) == ("ValueError: no template", False)
    assert entry.started_at is not None
    assert entry.finished_at is not None
    assert before <= entry.started_at <= entry.finished_at <= store.now()
    state = store.job_states()["alpha"]  # a job the store never loaded gets a state
    assert (state.last_outcome, state.fingerprint) == (Outcome.FAILED, "")
    retried = replace(run, try_no=1)
    assert store.begin_external(retried)
    assert store.end_external(retried, SUCCESS)
    assert [e.state for e in store.history("alpha", 10)] == [Outcome.SUCCEEDED, Outcome.FAILED]
    assert store.job_states()["alpha"].last_success_at is not None


# -- chains ("Chains" in the contract) -------------------------------------------------------------


def link(
    job: str, upstream: str = "alpha", when: When = "succeeded", overlap: Overlap = "allow"
) -> ChainLink:
    return ChainLink(
        job=job,
        upstream=upstream,
        when=when,
        queue="after",
        digest=f"digest-{job}",
        overlap=overlap,
        max_attempts=2,
    )


def test_chain_starts_one_run_per_qualifying_upstream_end(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.set_chains(leader, [link("beta"), link("gamma", when="failed")])
    slot = base + MINUTE
    run_id = queued(store, leader, item("alpha", slot))
    claim = claim_one(store)
    assert store.live_runs("beta") == []  # nothing before the upstream ends
    assert store.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    assert store.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED  # a client retry
    [after] = store.live_runs("beta")
    assert store.live_runs("gamma") == []  # 'failed' follows no success
    assert (
        after.run_id
        == chained_run_id("beta", run_id, "alpha")
        == (f"beta@{slot_id('beta', slot).split('@')[1]}~after~alpha")
    )
    assert after.upstream_run_id == run_id
    assert (after.slot, after.manual, after.state, after.epoch) == (
        slot,
        False,
        RunState.QUEUED,
        leader.epoch,
    )
    assert (after.queue, after.digest, after.max_attempts, after.attempt) == (
        "after",
        "digest-beta",
        2,
        0,
    )
    assert after.created_at == after.not_before
    assert job(store, "beta").last_slot is None  # no slot of beta's own was consumed
    downstream = claim_one(store, queues=["after"])
    assert downstream.run.run_id == after.run_id
    assert store.finish(after.run_id, downstream.token, SUCCESS) is FinishStatus.ACCEPTED
    assert store.live_runs() == []


def test_chain_follows_only_final_outcomes(store: Store, leader: Lease, base: datetime) -> None:
    store.set_chains(
        leader, [link("beta", when="finished"), link("gamma", when="failed"), link("delta")]
    )
    run_id = queued(store, leader, item("alpha", base + MINUTE, max_attempts=2))
    claim = claim_one(store)
    retry = replace(FAILURE, retry_at=store.now())
    assert store.finish(run_id, claim.token, retry) is FinishStatus.RETRY
    assert [r.job for r in store.live_runs()] == ["alpha"]  # a retry is not an end
    second = claim_one(store)
    assert store.finish(run_id, second.token, retry) is FinishStatus.ACCEPTED
    assert sorted(r.job for r in store.live_runs()) == ["beta", "gamma"]


def test_chain_follows_a_lost_run(store: Store, leader: Lease, base: datetime) -> None:
    store.set_chains(leader, [link("beta", when="failed")])
    run_id = queued(store, leader, item("alpha", base + MINUTE))
    claim = claim_one(store, ttl=SHORT_TTL)
    wait_past(store, claim.lease_expires_at)
    assert store.reap() == [run_id]
    assert [r.upstream_run_id for r in store.live_runs("beta")] == [run_id]


def test_chain_runs_are_one_per_upstream_run(store: Store, leader: Lease, base: datetime) -> None:
    store.set_chains(leader, [link("gamma"), link("gamma", upstream="beta")])
    slot = base + MINUTE
    run_to_end(store, leader, slot, SUCCESS)
    run_to_end(store, leader, slot, SUCCESS, name="beta")  # the same slot: its own run
    run_to_end(store, leader, slot + MINUTE, SUCCESS)
    runs = store.live_runs("gamma")
    assert sorted(r.upstream_run_id or "" for r in runs) == sorted(
        [slot_id("alpha", slot), slot_id("beta", slot), slot_id("alpha", slot + MINUTE)]
    )
    assert len({r.run_id for r in runs}) == 3


def test_chain_obeys_overlap_and_pause(store: Store, leader: Lease, base: datetime) -> None:
    store.set_chains(leader, [link("beta", overlap="skip"), link("gamma", overlap="queue")])
    first = run_to_end(store, leader, base + MINUTE, SUCCESS)
    second = run_to_end(store, leader, base + 2 * MINUTE, SUCCESS)
    [beta] = store.live_runs("beta")
    assert beta.upstream_run_id == first
    [skipped] = store.history("beta", 10)
    assert (skipped.state, skipped.run_id) == (
        Outcome.SKIPPED,
        chained_run_id("beta", second, "alpha"),
    )
    assert skipped.error == f"previous run {beta.run_id} still queued (overlap = skip)"
    assert [r.state for r in store.live_runs("gamma")] == [RunState.QUEUED, RunState.WAITING]
    store.set_paused("delta", True)
    store.set_chains(leader, [link("delta")])
    run_to_end(store, leader, base + 3 * MINUTE, SUCCESS)
    assert store.live_runs("delta") == []
    assert store.history("delta", 10) == []


def test_set_chains_is_fenced_and_replaces(store: Store, leader: Lease, base: datetime) -> None:
    store.set_chains(leader, [link("beta")])
    stale = replace(leader, token=new_token())
    with pytest.raises(Fenced):
        store.set_chains(stale, [link("gamma")])
    store.set_chains(leader, [link("gamma")])
    store.set_chains(leader, [link("gamma")])  # a repeat changes nothing
    run_to_end(store, leader, base + MINUTE, SUCCESS)
    assert [r.job for r in store.live_runs()] == ["gamma"]
    store.set_chains(leader, [])
    run_to_end(store, leader, base + 2 * MINUTE, SUCCESS)
    assert [r.job for r in store.live_runs()] == ["gamma"]


def test_chain_follows_an_external_end_not_a_sent_message(
    store: Store, leader: Lease, base: datetime
) -> None:
    store.set_chains(leader, [link("beta", when="finished")])
    sent = AttemptResult(outcome=Outcome.SENT)
    run_to_end(store, leader, base + MINUTE, sent)  # handed to Celery: not an end yet
    assert store.live_runs("beta") == []
    run = external("celery@a:1")
    assert store.begin_external(run)
    assert store.end_external(replace(run, try_no=0), AttemptResult(outcome=Outcome.RETRIED))
    assert store.live_runs("beta") == []
    retried = replace(run, try_no=1)
    assert store.begin_external(retried)
    assert store.end_external(retried, SUCCESS)
    assert store.end_external(retried, SUCCESS)  # a repeat starts nothing more
    assert [r.upstream_run_id for r in store.live_runs("beta")] == [run.run_id]
