"""A Redis store that comes back older than what running processes saw (issue 11): detected from
the generation every store object presents, never replayed, recorded ``uncertain``; fencing epochs
never repeat. The rollback is simulated on a private server: the namespace's keys are dumped
(``DUMP``) and later put back in place of everything written since (``RESTORE``), which is what a
restored snapshot or a promoted lagging replica looks like to chronod. FLUSHALL is the wipe.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from chronod.clock import SystemClock
from chronod.lock import LeaseKeeper
from chronod.store.base import (
    AttemptResult,
    DispatchStatus,
    FinishStatus,
    JobSync,
    Lease,
    Outcome,
    RolledBack,
    SlotDispatch,
)
from chronod.store.redis import RedisStore
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

MINUTE = timedelta(minutes=1)
LONG = timedelta(seconds=60)
SUCCESS = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0)


def slot(at: datetime) -> SlotDispatch:
    return SlotDispatch(
        job="alpha",
        fingerprint="fp",
        slot=at,
        next_due=at + MINUTE,
        queue="default",
        digest="d",
        overlap="allow",
        max_attempts=1,
        guard_ttl=timedelta(hours=24),
    )


class Snapshot:
    """The namespace's keys at one moment, restorable over whatever was written since."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client, self.pattern = client, "{" + namespace + "}:*"
        self.saved = {
            key: (client.dump(key), client.pttl(key)) for key in client.keys(self.pattern)
        }

    def restore(self) -> None:
        for key in self.client.keys(self.pattern):
            self.client.delete(key)
        for key, (data, ttl) in self.saved.items():
            self.client.restore(key, max(ttl, 0), data)


@pytest.fixture
def namespace() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


@pytest.fixture
def opened(redis_server: RedisServer, namespace: str) -> Iterator[list[RedisStore]]:
    """Store objects opened by the test (each is one process's view); closed at the end."""
    redis_server.client().flushall()
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        store.close()


def open_one(server: RedisServer, namespace: str, stores: list[RedisStore]) -> RedisStore:
    store = RedisStore.from_url(server.url, namespace=namespace)
    stores.append(store)
    return store


def lead(store: RedisStore, base: datetime) -> Lease:
    lease = store.acquire_lease("node", uuid.uuid4().hex, LONG)
    assert lease is not None
    store.sync_jobs(lease, [JobSync(name="alpha", fingerprint="fp", next_due=None)], base)
    return lease


def test_a_stale_generation_is_refused_and_the_lost_slots_end_uncertain(
    redis_server: RedisServer, namespace: str, opened: list[RedisStore]
) -> None:
    leader = open_one(redis_server, namespace, opened)
    base = leader.now().replace(microsecond=0) - timedelta(hours=1)
    lease = lead(leader, base)
    assert leader.dispatch(lease, [slot(base + MINUTE)])[0].status is DispatchStatus.QUEUED
    snapshot = Snapshot(redis_server.client(), namespace)
    lost = [base + 2 * MINUTE, base + 3 * MINUTE]
    assert {r.status for r in leader.dispatch(lease, [slot(s) for s in lost])} == {
        DispatchStatus.QUEUED
    }
    snapshot.restore()  # the store went back: the two dispatches above never happened

    # The leader's next write presents the newer generation: refused, nothing written.
    with pytest.raises(RolledBack, match="older state"):
        leader.dispatch(lease, [slot(base + 4 * MINUTE)])
    assert leader.job_states()["alpha"].watermark == base + MINUTE
    # Loaded again, it decides the lost slots once each: 'uncertain', never queued a second time.
    leader.sync_jobs(lease, [JobSync(name="alpha", fingerprint="fp", next_due=None)], base)
    results = leader.dispatch(lease, [slot(s) for s in lost])
    assert [r.status for r in results] == [DispatchStatus.UNCERTAIN] * 2
    again = leader.dispatch(lease, [slot(s) for s in lost])
    assert [r.status for r in again] == [DispatchStatus.DUPLICATE] * 2
    history = leader.history("alpha", 10)
    assert sorted(r.slot for r in history if r.state is Outcome.UNCERTAIN) == lost
    assert all("rollback" in (r.error or "") for r in history)
    assert [r.slot for r in leader.live_runs()] == [base + MINUTE]


def test_any_witness_detects_the_rollback_and_the_leader_learns_it(
    redis_server: RedisServer, namespace: str, opened: list[RedisStore]
) -> None:
    """A worker that saw the lost writes reports the rollback; the leader, whose own view was
    not ahead, is told at its next write."""
    leader = open_one(redis_server, namespace, opened)
    witness = open_one(redis_server, namespace, opened)
    base = leader.now().replace(microsecond=0) - timedelta(hours=1)
    lease = lead(leader, base)
    snapshot = Snapshot(redis_server.client(), namespace)
    leader.dispatch(lease, [slot(base + MINUTE)])
    claim = witness.claim("w", ["default"], uuid.uuid4().hex, LONG, 0)
    assert claim is not None  # the witness ran this run ...
    snapshot.restore()  # ... and the store forgot both the run and the claim
    # The witness's result is stale, and its call records the rollback for everyone.
    assert witness.finish(claim.run.run_id, claim.token, SUCCESS) is FinishStatus.STALE
    with pytest.raises(RolledBack):
        leader.dispatch(lease, [slot(base + 2 * MINUTE)])
    leader.sync_jobs(lease, [JobSync(name="alpha", fingerprint="fp", next_due=None)], base)
    [result] = leader.dispatch(lease, [slot(base + MINUTE)])
    assert result.status is DispatchStatus.UNCERTAIN  # never run a second time


def test_runs_created_before_a_rollback_are_never_started_again(
    redis_server: RedisServer, namespace: str, opened: list[RedisStore]
) -> None:
    leader = open_one(redis_server, namespace, opened)
    worker = open_one(redis_server, namespace, opened)
    base = leader.now().replace(microsecond=0) - timedelta(hours=1)
    lease = lead(leader, base)
    leader.dispatch(lease, [slot(base + MINUTE)])
    snapshot = Snapshot(redis_server.client(), namespace)
    claim = worker.claim("w1", ["default"], uuid.uuid4().hex, LONG, 0)
    assert claim is not None
    snapshot.restore()  # the run is queued again: the claim (and the run it started) is lost
    assert worker.heartbeat(claim.run.run_id, claim.token, LONG) is False  # detects it
    other = open_one(redis_server, namespace, opened)
    assert other.claim("w2", ["default"], uuid.uuid4().hex, LONG, 0) is None
    [entry] = other.history("alpha", 10)
    assert entry.state is Outcome.UNCERTAIN
    assert entry.run_id == claim.run.run_id
    assert other.live_runs() == []


def test_epochs_strictly_increase_across_a_rollback(
    redis_server: RedisServer, namespace: str, opened: list[RedisStore]
) -> None:
    keeper_a = open_one(redis_server, namespace, opened)
    keeper_b = open_one(redis_server, namespace, opened)
    first = keeper_a.acquire_lease("a", uuid.uuid4().hex, LONG)
    assert first is not None
    snapshot = Snapshot(redis_server.client(), namespace)
    keeper_a.release_lease(first)
    second = keeper_b.acquire_lease("b", uuid.uuid4().hex, LONG)
    assert second is not None
    assert keeper_a.acquire_lease("a", uuid.uuid4().hex, LONG) is None  # a learns epoch 2
    assert second.epoch == first.epoch + 1
    seen = {first.epoch, second.epoch}
    snapshot.restore()  # the store's counter is back at the first epoch, its lease is a's

    # A standby that saw the newer epoch never takes it (or an older one) again ...
    redis_server.client().hset("{" + namespace + "}:lease", "expires", "0")
    third = keeper_a.acquire_lease("a", uuid.uuid4().hex, LONG)
    assert third is not None
    assert third.epoch > max(seen)
    seen.add(third.epoch)
    # ... and once the rollback is detected, not even a process that saw nothing can (the floor
    # after a detection is the store's clock in milliseconds: let one pass).
    time.sleep(0.002)
    snapshot.restore()
    keeper_b.leader()  # presents its generation: the rollback is recorded
    redis_server.client().hset("{" + namespace + "}:lease", "expires", "0")
    fresh = open_one(redis_server, namespace, opened)
    fourth = fresh.acquire_lease("c", uuid.uuid4().hex, LONG)
    assert fourth is not None
    assert fourth.epoch > max(seen)


def test_a_wiped_store_records_the_gap_uncertain(
    redis_server: RedisServer, namespace: str, opened: list[RedisStore]
) -> None:
    """After FLUSHALL the job's state is gone: its slots between the last state a process saw
    and the new load are each recorded 'uncertain' (they got no record at all before)."""
    leader = open_one(redis_server, namespace, opened)
    now = leader.now().replace(microsecond=0)
    lease = lead(leader, now - 10 * MINUTE)
    leader.dispatch(lease, [slot(now - 5 * MINUTE)])
    redis_server.client().flushall()
    with pytest.raises(RolledBack):
        leader.dispatch(lease, [slot(now - 4 * MINUTE)])
    again = leader.acquire_lease("node", uuid.uuid4().hex, LONG)
    assert again is not None
    lease = again
    loaded = leader.now()
    [state] = leader.sync_jobs(
        lease, [JobSync(name="alpha", fingerprint="fp", next_due=None)], loaded
    )
    assert state.watermark is not None
    assert state.watermark < loaded
    gap = state.watermark + timedelta(microseconds=1)
    [result] = leader.dispatch(lease, [slot(gap)])
    assert result.status is DispatchStatus.UNCERTAIN
    [after] = leader.dispatch(lease, [slot(loaded + timedelta(microseconds=1))])
    assert after.status is DispatchStatus.QUEUED  # after the load: runs as usual


def test_the_log_says_the_store_went_back_not_that_a_newer_leader_took_over(
    redis_server: RedisServer,
    namespace: str,
    opened: list[RedisStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The renewal refused after a rollback names what the store holds: an older epoch."""
    first = open_one(redis_server, namespace, opened)
    old = first.acquire_lease("a", uuid.uuid4().hex, LONG)
    assert old is not None
    snapshot = Snapshot(redis_server.client(), namespace)
    first.release_lease(old)
    keeper = LeaseKeeper(
        open_one(redis_server, namespace, opened), node="b", ttl=LONG, clock=SystemClock()
    )
    keeper.step()  # acquires: a newer epoch than the snapshot's lease
    lease = keeper.current()
    assert lease is not None
    snapshot.restore()  # the store holds a's older lease again
    with caplog.at_level(logging.WARNING, logger="chronod.lease"):
        keeper._try_renew(lease, 0.0)
    assert keeper.current() is None
    [line] = [r.getMessage() for r in caplog.records if "stepped down" in r.getMessage()]
    assert f"epoch {old.epoch}" in line
    assert "older than ours" in line
    assert "newer epoch" not in line
