"""Redis-only behaviour of :class:`chronod.store.redis.RedisStore` (the contract is in
``test_store_contract.py``): key layout and hash tag, guard expiry, scripts run twice, URLs and
credentials, connection failures, a server restart, Sentinel, and the ticket stream's invariants.

Every test uses a private redis-server on a free port (``tests/redis_server.py``). Nothing waits on
a bare sleep except where the passage of time is the scenario; conditions are polled instead.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection
from redis.crc import key_slot
from redis.sentinel import SentinelConnectionPool

import chronod.store.redis.store as redis_module
from chronod.errors import StoreConfigError, StoreDiskError, StoreUnavailable
from chronod.instants import slot_id, to_micros
from chronod.store import StoreSettings, open_store
from chronod.store.base import (
    AttemptResult,
    DispatchStatus,
    FinishStatus,
    JobSync,
    Lease,
    NotAcknowledged,
    Outcome,
    RunState,
    SlotDispatch,
    WorkerInfo,
)
from chronod.store.keys import GROUP, KeySpace
from chronod.store.redis import SCRIPTS, RedisStore
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

T = TypeVar("T")
MINUTE = timedelta(minutes=1)
LONG = timedelta(seconds=60)
SHORT = timedelta(milliseconds=300)
SUCCESS = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="ok\n")
PASSWORD = "s3cr3t-pa55"


def token() -> str:
    return uuid.uuid4().hex


def wait_until(predicate: Callable[[], T], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def slot(
    job: str,
    at: datetime,
    *,
    queue: str = "default",
    overlap: str = "allow",
    max_attempts: int = 1,
    guard_ttl: timedelta = timedelta(hours=24),
) -> SlotDispatch:
    return SlotDispatch(
        job=job,
        fingerprint="fp",
        slot=at,
        next_due=at + MINUTE,
        queue=queue,
        digest="digest",
        overlap=overlap,  # type: ignore[arg-type]
        max_attempts=max_attempts,
        guard_ttl=guard_ttl,
    )


def lead(store: RedisStore, jobs: tuple[str, ...] = ("alpha", "beta")) -> tuple[Lease, datetime]:
    """A 60 s lease with ``jobs`` loaded two hours ago; returns it and that load instant."""
    base = store.now().replace(microsecond=0) - timedelta(hours=2)
    lease = store.acquire_lease("node-a", token(), LONG)
    assert lease is not None
    store.sync_jobs(lease, [JobSync(name=j, fingerprint="fp", next_due=None) for j in jobs], base)
    return lease, base


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rstore(redis_server: RedisServer, namespace: str) -> Iterator[RedisStore]:
    redis_server.client().flushall()
    store = RedisStore.from_url(redis_server.url, namespace=namespace)
    yield store
    store.close()


# -- key layout ------------------------------------------------------------------------------------


def workload(store: RedisStore) -> None:
    """Touch every kind of key: lease, jobs, guards, runs (queued, waiting, running, retried,
    finished, skipped, missed, manual), tickets, attempt tokens, workers."""
    lease, base = lead(store, ("alpha", "beta", "gamma"))
    store.dispatch(
        lease,
        [
            slot("alpha", base + MINUTE, overlap="queue", max_attempts=2),
            slot("alpha", base + 2 * MINUTE, overlap="queue"),
            slot("beta", base + MINUTE, queue="reports", overlap="skip"),
            slot("beta", base + 2 * MINUTE, queue="reports", overlap="skip"),
        ],
    )
    store.advance(lease, "gamma", "fp", [base + MINUTE], 1, base + 2 * MINUTE)
    first = store.claim("w1", ["default", "reports"], token(), LONG, 0)
    assert first is not None
    retry = AttemptResult(outcome=Outcome.FAILED, exit_code=1, retry_at=store.now() + MINUTE)
    assert store.finish(first.run.run_id, first.token, retry) is FinishStatus.RETRY
    second = store.claim("w1", ["reports"], token(), LONG, 0)
    assert second is not None
    assert store.finish(second.run.run_id, second.token, SUCCESS) is FinishStatus.ACCEPTED
    store.enqueue_manual("gamma", "default", "digest", "allow", 1)
    store.set_paused("delta", True)
    store.register_worker(
        WorkerInfo(worker="host:1", queues=("default",), seen_at=store.now(), running=0,
                   concurrency=2)
    )  # fmt: skip
    store.retire_jobs(lease, ["alpha", "beta"])
    store.release_lease(lease)


def test_every_key_has_the_namespace_hash_tag_and_a_documented_shape(
    rstore: RedisStore, redis_server: RedisServer, namespace: str
) -> None:
    workload(rstore)
    keys = [k.decode() for k in redis_server.client().scan_iter(count=1000)]
    assert len(keys) > 20
    space = KeySpace(namespace)
    strangers = [k for k in keys if not space.owns(k)]
    assert strangers == [], "keys outside the documented layout"
    # One hash tag, one cluster slot: every script may touch every key under Redis Cluster.
    assert {key_slot(k.encode()) for k in keys} == {key_slot(space.prefix.encode())}


def test_namespace_with_braces_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(StoreConfigError, match="brace"):
        RedisStore.from_url(redis_server.url, namespace="a{b}")


def test_guard_keys_expire_after_at_least_guard_ttl(
    rstore: RedisStore, redis_server: RedisServer, namespace: str
) -> None:
    lease, base = lead(rstore)
    ttls = {"alpha": timedelta(hours=48), "beta": timedelta(hours=24)}
    results = rstore.dispatch(lease, [slot(j, base + MINUTE, guard_ttl=t) for j, t in ttls.items()])
    assert [r.status for r in results] == [DispatchStatus.QUEUED] * 2
    client = redis_server.client()
    space = KeySpace(namespace)
    for job, ttl in ttls.items():
        pttl = int(client.pttl(space.guard(job, to_micros(base + MINUTE))))
        wanted = ttl // timedelta(milliseconds=1)
        assert wanted - 60_000 <= pttl <= wanted


# -- scripts ---------------------------------------------------------------------------------------


def test_every_script_has_a_documented_header() -> None:
    folder = resources.files("chronod.store").joinpath("lua")
    for name in SCRIPTS:
        text = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        lines = text.splitlines()
        header = "\n".join(
            lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]
        )
        assert text.startswith(f"-- {name}.lua: "), name
        for part in ("KEYS[", "ARGV[1]", "Returns", "Twice:"):
            assert part in header, f"{name}.lua header lacks {part!r}"


class TwiceRedis(redis.Redis):
    """Runs every script twice and answers with the second run, exactly what redis-py's retry does
    when a reply is lost after the server executed the command."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        run: Callable[..., Any] = super().execute_command  # (untyped in redis-py)
        if args and str(args[0]).upper() in ("EVALSHA", "EVAL"):
            run(*args, **options)
        return run(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe: Any = cast(Any, super()).pipeline(transaction, shard_hint)
        execute = pipe.execute

        def twice(raise_on_error: bool = True) -> list[Any]:
            pipe.command_stack = [c for c in pipe.command_stack for _ in (1, 2)]
            return list(execute(raise_on_error))[1::2]

        pipe.execute = twice
        return pipe


def test_every_script_run_twice_gives_the_documented_answer(
    redis_server: RedisServer, namespace: str
) -> None:
    redis_server.client().flushall()
    client = TwiceRedis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    store = RedisStore(client, namespace=namespace)
    try:
        run_twice_scenario(store)
    finally:
        store.close()


def run_twice_scenario(store: RedisStore) -> None:
    lease_token = token()
    lease = store.acquire_lease("node-a", lease_token, LONG)  # acquire: the same lease
    assert lease is not None
    assert store.acquire_lease("node-a", lease_token, LONG) == lease
    assert store.renew_lease(lease, LONG) is not None  # renew: extended again
    base = store.now().replace(microsecond=0) - timedelta(hours=2)
    jobs = [JobSync(name=j, fingerprint="fp", next_due=None) for j in ("alpha", "beta", "gamma")]
    states = store.sync_jobs(lease, jobs, base)  # sync_jobs: unchanged the second time
    assert [s.watermark for s in states] == [base] * 3
    assert store.retire_jobs(lease, ["alpha", "beta"]) == []  # retire: nothing more the 2nd time
    assert store.job_states()["gamma"].fingerprint == ""

    # dispatch: the second run sees the guard: DUPLICATE, with the first decision's instant.
    [result] = store.dispatch(lease, [slot("alpha", base + MINUTE, max_attempts=2)])
    assert result.status is DispatchStatus.DUPLICATE
    run_id = slot_id("alpha", base + MINUTE)
    assert [r.run_id for r in store.live_runs()] == [run_id]
    assert store.queue_depths() == {"default": 1}

    state = store.advance(lease, "beta", "fp", [base + MINUTE], 3, base + 2 * MINUTE)
    assert (state.missed, len(store.history("beta", 10))) == (3, 1)  # counted once

    # claim: the same claim, one attempt; heartbeat: extended again.
    claim = store.claim("w1", ["default"], token(), SHORT, 0)
    assert claim is not None
    assert (claim.run.run_id, claim.attempt) == (run_id, 1)
    assert store.heartbeat(run_id, claim.token, SHORT) is True
    # hand_back: the second run finds the token gone and answers False (already done); the
    # attempt counter went back exactly once.
    assert store.hand_back(run_id, claim.token) is False
    assert (store.live_runs()[0].state, store.live_runs()[0].attempt) == (RunState.QUEUED, 0)

    claim = store.claim("w1", ["default"], token(), SHORT, 0)
    assert claim is not None
    assert claim.attempt == 1
    expires = claim.lease_expires_at
    wait_until(lambda: store.now() > expires)
    assert store.reap() == []  # the first run reaped it; the second finds nothing
    assert (store.live_runs()[0].state, store.live_runs()[0].attempt) == (RunState.QUEUED, 1)

    claim = store.claim("w2", ["default"], token(), LONG, 0)
    assert claim is not None
    assert claim.attempt == 2
    assert store.finish(run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
    assert [(e.run_id, e.attempt) for e in store.history("alpha", 10)] == [(run_id, 2)]
    assert store.live_runs() == []

    manual = store.enqueue_manual("alpha", "default", "digest", "allow", 1)  # one run, not two
    assert [r.run_id for r in store.live_runs()] == [manual.run_id]
    assert store.set_paused("alpha", True).paused
    resumed = store.set_paused("alpha", False)
    assert not resumed.paused
    store.register_worker(
        WorkerInfo(worker="w1", queues=("default",), seen_at=store.now(), running=1, concurrency=1)
    )
    assert [w.worker for w in store.workers()] == ["w1"]
    store.release_lease(lease)
    assert store.leader() is None


# -- dispatch in chunks ------------------------------------------------------------------------


def test_a_batch_of_many_chunks_answers_each_item_and_a_repeat_answers_the_same(
    rstore: RedisStore, redis_server: RedisServer, namespace: str
) -> None:
    """Items cross chunk boundaries (one script call per DISPATCH_CHUNK, one flat JSON argument,
    a compact reply): every status lands on its own item, and repeating the batch answers
    DUPLICATE for what ran, with the first decision's instant and run id."""
    count = 2 * redis_module.DISPATCH_CHUNK + 7
    names = [f"job{i:04d}" for i in range(count)]
    lease, base = lead(rstore, tuple(names))
    first, second = base + MINUTE, base + 2 * MINUTE
    items: list[SlotDispatch] = []
    for i, name in enumerate(names):
        if i % 50 == 3:
            items.append(slot(name, base))  # at the watermark: STALE
        elif i % 50 == 4:
            items.append(slot("nope", first))  # no such job: UNKNOWN_JOB
        else:
            items.append(slot(name, first, queue="q-é" if i % 2 else "default"))
    items.append(slot(names[0], first))  # the same slot again, in a later chunk: DUPLICATE
    items.append(slot(names[1], rstore.now() + timedelta(hours=1)))  # EARLY
    before = rstore.now()
    results = rstore.dispatch(lease, items)
    after = rstore.now()
    assert len(results) == len(items)
    expected: list[DispatchStatus] = []
    for i in range(count):
        expected.append(
            DispatchStatus.STALE
            if i % 50 == 3
            else DispatchStatus.UNKNOWN_JOB
            if i % 50 == 4
            else DispatchStatus.QUEUED
        )
    expected += [DispatchStatus.DUPLICATE, DispatchStatus.EARLY]
    assert [r.status for r in results] == expected
    for item, result in zip(items, results, strict=True):
        named = result.status in (DispatchStatus.QUEUED, DispatchStatus.DUPLICATE)
        assert result.run_id == (slot_id(item.job, item.slot) if named else None)
        assert result.dispatched_at is not None
        assert before <= result.dispatched_at <= after
    queued = [r for r in results if r.status is DispatchStatus.QUEUED]
    assert sorted(r.run_id or "" for r in queued) == sorted(r.run_id for r in rstore.live_runs())
    assert sum(rstore.queue_depths().values()) == len(queued)
    state = rstore.job_states()[names[0]]
    assert (state.watermark, state.last_slot, state.next_due) == (first, first, second)

    again = rstore.dispatch(lease, items)
    for result, repeat in zip(results, again, strict=True):
        if result.status is DispatchStatus.QUEUED:
            assert repeat.status is DispatchStatus.DUPLICATE
            assert (repeat.run_id, repeat.dispatched_at) == (result.run_id, result.dispatched_at)
        elif result.status is DispatchStatus.DUPLICATE:
            assert repeat == result  # the guard's instant both times
        else:
            assert repeat.status is result.status
    assert sum(rstore.queue_depths().values()) == len(queued)


# -- the ticket stream -----------------------------------------------------------------------------


def unread(client: Any, stream: str) -> int:
    """Tickets in ``stream`` the group has not delivered yet (after its last-delivered id; the
    group's ``lag`` is unknown to Redis 7.0 once entries have been deleted)."""
    for group in client.xinfo_groups(stream):
        if group["name"] in (GROUP, GROUP.encode()):
            last: Any = group["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else str(last)
            after: Any = client.xrange(stream, min="(" + last, max="+")
            return len(after)
    return 0


def test_claim_across_queues_keeps_the_other_queues_ticket(
    rstore: RedisStore, redis_server: RedisServer, namespace: str
) -> None:
    """A worker on [a, b] woken by a's ticket claims b's older run: a's ticket must stay unread,
    or a worker listening only on a would sleep while a's run is ready."""
    lease, base = lead(rstore)
    rstore.dispatch(lease, [slot("alpha", base + 2 * MINUTE, queue="a")])
    rstore.dispatch(lease, [slot("beta", base + MINUTE, queue="b")])
    client = redis_server.client()
    space = KeySpace(namespace)
    got: Any = client.xreadgroup(GROUP, "w1", {space.stream("a"): ">"}, count=1)
    ticket = got[0][1][0][0].decode()
    assert unread(client, space.stream("a")) == 0
    claimed, _, _ = rstore._claim_once("w1", ["a", "b"], token(), LONG, {"a": [ticket]})
    assert claimed is not None
    assert claimed.run.run_id == slot_id("beta", base + MINUTE)  # the oldest, across queues
    assert unread(client, space.stream("a")) == 1  # given back
    assert unread(client, space.stream("b")) == 0  # b's ticket spent with its run
    assert client.xlen(space.stream("a")) == 1
    assert client.xlen(space.stream("b")) == 0


def test_a_blocked_worker_wakes_for_a_new_run(
    rstore: RedisStore, redis_server: RedisServer, namespace: str
) -> None:
    lease, base = lead(rstore)
    other = RedisStore.from_url(redis_server.url, namespace=namespace)
    try:
        box: list[Any] = []
        waiter = threading.Thread(
            target=lambda: box.append(other.claim("w1", ["reports"], token(), LONG, 10.0))
        )
        started = time.monotonic()
        waiter.start()
        time.sleep(0.2)  # the scenario: the worker is already blocked when the run arrives
        rstore.dispatch(lease, [slot("alpha", base + MINUTE, queue="reports")])
        waiter.join(10)
        assert len(box) == 1
        assert box[0] is not None
        assert box[0].run.run_id == slot_id("alpha", base + MINUTE)
        assert time.monotonic() - started < 2.0
    finally:
        other.close()


def test_a_waiting_claim_takes_a_retry_when_it_comes_due(rstore: RedisStore) -> None:
    lease, base = lead(rstore)
    rstore.dispatch(lease, [slot("alpha", base + MINUTE, max_attempts=2)])
    first = rstore.claim("w1", ["default"], token(), LONG, 0)
    assert first is not None
    retry_at = rstore.now() + timedelta(milliseconds=300)
    failed = AttemptResult(outcome=Outcome.FAILED, exit_code=1, retry_at=retry_at)
    assert rstore.finish(first.run.run_id, first.token, failed) is FinishStatus.RETRY
    started = time.monotonic()
    second = rstore.claim("w1", ["default"], token(), LONG, 5.0)
    assert second is not None
    assert second.attempt == 2
    assert second.run.started_at is not None
    assert second.run.started_at >= retry_at
    assert time.monotonic() - started < 2.0


def test_a_waiting_claim_takes_over_an_expired_attempt(rstore: RedisStore) -> None:
    lease, base = lead(rstore)
    rstore.dispatch(lease, [slot("alpha", base + MINUTE, max_attempts=2)])
    first = rstore.claim("w1", ["default"], token(), SHORT, 0)
    assert first is not None
    started = time.monotonic()
    second = rstore.claim("w2", ["default"], token(), LONG, 5.0)
    assert second is not None
    assert (second.run.run_id, second.attempt) == (first.run.run_id, 2)
    assert time.monotonic() - started < 2.0


def test_abandoned_ticket_is_recovered(
    rstore: RedisStore, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker read a ticket and died before claiming: the ticket becomes unread again."""
    monkeypatch.setattr(redis_module, "ABANDONED_TICKET_MS", 50)
    lease, base = lead(rstore)
    rstore.dispatch(lease, [slot("alpha", base + MINUTE)])
    client = redis_server.client()
    stream = KeySpace(namespace).stream("default")
    assert client.xreadgroup(GROUP, "crashed", {stream: ">"}, count=1)
    assert unread(client, stream) == 0
    time.sleep(0.1)  # the scenario: the ticket has been idle longer than the threshold
    # A claim on another queue promotes only its own queues; one on "default" recovers first.
    claim = rstore.claim("w1", ["default"], token(), LONG, 0)
    assert claim is not None
    assert client.xlen(stream) == 0  # recovered, then spent by the claim
    assert client.xpending(stream, GROUP)["pending"] == 0


def test_close_ends_a_waiting_claim(redis_server: RedisServer, namespace: str) -> None:
    store = RedisStore.from_url(redis_server.url, namespace=namespace)
    box: list[Any] = []
    waiter = threading.Thread(
        target=lambda: box.append(store.claim("w1", ["default"], token(), LONG, 30.0))
    )
    waiter.start()
    time.sleep(0.2)  # the scenario: close() while the claim blocks
    store.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert box == [None]


# -- URLs, credentials and errors ----------------------------------------------------------------


def test_urls_build_the_right_connections() -> None:
    tls = RedisStore.from_url(f"rediss://:{PASSWORD}@cache.example:6380/2?ssl_cert_reqs=none")
    unix = RedisStore.from_url(f"unix://:{PASSWORD}@/run/redis/redis.sock?db=3")
    sentinel = RedisStore.from_url(
        f"redis+sentinel://:{PASSWORD}@s1.example:26379,s2.example/mymaster/4"
    )
    try:
        tls_pool = cast(Any, tls._exec).client.connection_pool
        assert tls_pool.connection_class is SSLConnection
        assert tls_pool.connection_kwargs["host"] == "cache.example"
        assert (tls_pool.connection_kwargs["port"], tls_pool.connection_kwargs["db"]) == (6380, 2)
        unix_pool = cast(Any, unix._exec).client.connection_pool
        assert unix_pool.connection_class is UnixDomainSocketConnection
        assert unix_pool.connection_kwargs["path"] == "/run/redis/redis.sock"
        assert unix_pool.connection_kwargs["db"] == 3
        pool = cast(Any, sentinel._exec).client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        assert pool.connection_kwargs["db"] == 4
        assert pool.connection_kwargs["password"] == PASSWORD
        hosts = [
            (
                s.connection_pool.connection_kwargs["host"],
                s.connection_pool.connection_kwargs["port"],
            )
            for s in pool.sentinel_manager.sentinels
        ]
        assert hosts == [("s1.example", 26379), ("s2.example", 26379)]
        for store in (tls, unix, sentinel):
            assert PASSWORD not in store.describe()
            assert "***" in store.describe()
            assert PASSWORD not in repr(store.describe())
    finally:
        for store in (tls, unix, sentinel):
            store.close()


def test_open_store_dispatches_redis_urls(tmp_path: Path, redis_server: RedisServer) -> None:
    store = open_store(StoreSettings(url=redis_server.url, config_dir=tmp_path, namespace="x"))
    try:
        assert isinstance(store, RedisStore)
        assert store.describe() == redis_server.url
        assert store.leader() is None
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@localhost:notaport/0",
        f"redis+sentinel://:{PASSWORD}@s1:26379",
        f"redis+sentinel://:{PASSWORD}@s1:xx/mymaster",
    ],
)
def test_bad_urls_raise_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(StoreConfigError) as caught:
        RedisStore.from_url(url)
    assert PASSWORD not in str(caught.value)


def test_unreachable_server_raises_store_unavailable_in_one_line() -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nobody listens there
    store = RedisStore.from_url(url)
    try:
        started = time.monotonic()
        for call in (store.now, store.leader, lambda: store.claim("w", ["q"], "t", LONG, 0)):
            with pytest.raises(StoreUnavailable) as caught:
                call()
            message = str(caught.value)
            assert "\n" not in message
            assert PASSWORD not in message
            assert "127.0.0.1" in message
        assert time.monotonic() - started < 10.0  # a few quick retries, not a hang
    finally:
        store.close()


def test_a_full_server_is_a_transient_storage_error_then_recovers(
    redis_server: RedisServer, rstore: RedisStore
) -> None:
    """maxmemory reached under noeviction (the advised policy): writes fail as StoreDiskError,
    which the daemon and workers retry like a full disk, and work again once there is room."""
    lease, base = lead(rstore)
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # below what the server uses already: every write is OOM
    try:
        with pytest.raises(StoreDiskError, match=r"cannot write: .*maxmemory"):
            rstore.dispatch(lease, [slot("alpha", base + MINUTE)])
        assert rstore.job_states()["alpha"].last_slot is None  # reads go on
    finally:
        client.config_set("maxmemory", "0")
    [result] = rstore.dispatch(lease, [slot("alpha", base + MINUTE)])
    assert result.status is DispatchStatus.QUEUED


def test_server_restart_fails_then_recovers_without_losing_state(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "restart", persist=True)
    server.start()
    store = RedisStore.from_url(server.url, namespace="restart")
    try:
        lease, base = lead(store)
        store.dispatch(lease, [slot("alpha", base + MINUTE), slot("beta", base + MINUTE)])
        running = store.claim("w1", ["default"], token(), LONG, 0)
        assert running is not None
        states, live = store.job_states(), store.live_runs()

        server.kill()
        for call in (
            store.now,
            store.leader,
            store.job_states,
            lambda: store.claim("w1", ["default"], token(), LONG, 0),
            lambda: store.dispatch(lease, [slot("alpha", base + 2 * MINUTE)]),
        ):
            with pytest.raises(StoreUnavailable):
                call()  # fmt: skip
        server.start()

        # The script cache died with the server: EVALSHA falls back to loading the scripts.
        assert store.job_states() == states
        assert store.live_runs() == live
        assert store.leader() is not None
        assert store.queue_depths() == {"default": 1}
        waiting = store.claim("w2", ["default"], token(), LONG, 0)
        assert waiting is not None
        assert waiting.run.run_id == slot_id("beta", base + MINUTE)
        assert store.finish(running.run.run_id, running.token, SUCCESS) is FinishStatus.ACCEPTED
        [result] = store.dispatch(lease, [slot("alpha", base + 2 * MINUTE)])
        assert result.status is DispatchStatus.QUEUED
    finally:
        store.close()
        server.stop()


# -- Sentinel --------------------------------------------------------------------------------------


@pytest.fixture
def sentinel(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A real redis-server --sentinel monitoring the session's server as "mymaster"."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [redis_server.binary, str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client: Any = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

        def ready() -> bool:
            try:
                return bool(client.sentinel_get_master_addr_by_name("mymaster"))
            except redis.ConnectionError:
                return False

        wait_until(ready, timeout=10)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_sentinel_url_finds_the_master(sentinel: int, redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    url = f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0"
    store = RedisStore.from_url(url, namespace="s", replica_acks=0)
    try:
        lease, base = lead(store)
        [result] = store.dispatch(lease, [slot("alpha", base + MINUTE)])
        assert result.status is DispatchStatus.QUEUED
        claim = store.claim("w1", ["default"], token(), LONG, 0)
        assert claim is not None
        assert store.finish(claim.run.run_id, claim.token, SUCCESS) is FinishStatus.ACCEPTED
        assert redis_server.client().exists("{s}:history:alpha") == 1  # on the monitored master
    finally:
        store.close()


def test_sentinel_default_waits_for_a_replica(sentinel: int, redis_server: RedisServer) -> None:
    """Sentinel's default is one acknowledging replica: a primary without one dispatches nothing
    claimable, and says why in one line."""
    redis_server.client().flushall()
    store = RedisStore.from_url(f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0", namespace="s")
    try:
        assert store.replica_acks == 1
        lease, base = lead(store)
        with pytest.raises(NotAcknowledged, match="replica_acks = 1"):
            store.dispatch(lease, [slot("alpha", base + MINUTE)])
        assert store.claim("w1", ["default"], token(), LONG, 0) is None  # held, not claimable
        [run] = store.live_runs()
        assert run.state is RunState.QUEUED
    finally:
        store.close()


def test_an_unacknowledged_claim_is_handed_back_until_a_hand_back_is_acknowledged(
    tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim whose WAIT fails is never run, and it may survive in a replica that saw it late;
    the worker hands it back in every later claim until a hand-back is acknowledged, so the run
    is claimed again on its first attempt instead of ending 'lost' when its attempt lease runs
    out. Here the first hand-back fails outright, as it would with the primary gone."""
    primary = RedisServer(tmp_path / "primary")
    primary.start()
    replica = RedisServer(
        tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    replica.start()
    store = RedisStore.from_url(primary.url, namespace=namespace, replica_acks=1)
    try:
        wait_until(
            lambda: primary.client().info("replication").get("slave0", {}).get("state") == "online",
            10,
        )
        lease, base = lead(store)
        store.dispatch(lease, [slot("alpha", base + MINUTE)])
        replica.pause()

        def unavailable(run_id: str, token: str) -> bool:
            raise StoreUnavailable("the primary went away")

        with monkeypatch.context() as patch:
            patch.setattr(store, "hand_back", unavailable)
            with pytest.raises(NotAcknowledged):
                store.claim("w1", ["default"], token(), LONG, 0)
        [held] = store.live_runs()
        assert held.state is RunState.RUNNING  # the claim the replica may hold
        replica.resume()
        again = store.claim("w1", ["default"], token(), LONG, 2.0)
        assert again is not None
        assert (again.run.run_id, again.attempt) == (held.run_id, 1)
        assert store.history("alpha", 10) == []  # nothing ended lost
    finally:
        store.close()
        replica.stop()
        primary.stop()


def test_describe_never_shows_the_password() -> None:
    for url in (
        f"redis://:{PASSWORD}@h:6379/0",
        f"redis://admin:{PASSWORD}@h:6379/0",
        f"rediss://admin:{PASSWORD}@h:6380/0",
        f"redis+sentinel://admin:{PASSWORD}@h1:26379,h2:26380/svc/1",
    ):
        store = RedisStore.from_url(url)
        try:
            assert PASSWORD not in store.describe()
            assert re.search(r":\*\*\*@", store.describe()), store.describe()
        finally:
            store.close()
