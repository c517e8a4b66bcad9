"""Workers on both stores: the consumer in-process; the pool and ``chronod worker`` as processes.

Runs are queued with :meth:`Store.enqueue_manual` (no leader needed). Conditions are polled with a
deadline (:func:`tests.procs.wait_until`); the jobs themselves are real processes and leave marker
files that tests read. Attempt leases and delays are short so the whole module stays fast.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod.config import Config, load_config
from chronod.errors import StoreUnavailable
from chronod.store import StoreSettings, open_store
from chronod.store.base import AttemptResult, FinishStatus, Outcome, RunRecord, RunState, Store
from chronod.tz import UTC
from chronod.worker import (
    MAX_RETRY_DELAY,
    ConfigSource,
    Consumer,
    ConsumerSettings,
    PoolSettings,
    WorkerPool,
    retry_at,
)
from tests.procs import Processes, wait_until, write_atomically
from tests.redis_server import RedisServer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process checks use /proc")

HEADER = '[defaults]\ntimezone = "UTC"\n'
FAST = ConsumerSettings(
    queues=("default",),
    attempt_ttl=timedelta(seconds=3),
    drain_timeout=timedelta(seconds=5),
    claim_wait=0.2,
    store_backoff=(0.01, 0.02),
)


def write_config(tmp_path: Path, jobs: str, header: str = HEADER) -> Path:
    path = tmp_path / "schedules.toml"
    path.write_text(header + jobs)
    return path


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    """Consumers a test made: closed at the end (each has a fork server to let go of)."""
    made: list[Consumer] = []
    yield made
    for consumer in made:
        consumer.close()


def consumer_for(
    consumers: list[Consumer], store: Store, config: Config, **settings: Any
) -> Consumer:
    values = {**FAST.__dict__, **settings}
    consumer = Consumer(store, ConfigSource(config), ConsumerSettings(**values))
    consumers.append(consumer)
    return consumer


def enqueue(store: Store, config: Config, job: str, *, digest: str | None = None) -> RunRecord:
    spec = config.jobs.get(job)
    return store.enqueue_manual(
        job,
        spec.queue if spec else "default",
        digest if digest is not None else (spec.digest if spec else "none"),
        "allow",
        spec.max_attempts if spec else 1,
    )


def history(store: Store, job: str) -> list[RunRecord]:
    return list(reversed(store.history(job, 100)))  # oldest first


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def step_until(consumer: Consumer, done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached while consuming"
        consumer.step()


def when_file(path: Path, action: Callable[[], None], timeout: float = 10.0) -> threading.Thread:
    """Run ``action`` in a thread as soon as ``path`` exists (the job announced itself)."""

    def watch() -> None:
        wait_until(path.exists, timeout=timeout, what=f"{path.name} to appear")
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# -- retry arithmetic ------------------------------------------------------------------------------


def test_retry_at_doubles_with_bounded_jitter() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = timedelta(seconds=30)
    rng = random.Random(7)
    for attempt in range(1, 8):
        for _ in range(50):
            delay = (retry_at(now, base, attempt, rng) - now).total_seconds()
            nominal = 30 * 2 ** (attempt - 1)
            assert 0.85 * nominal <= delay <= 1.15 * nominal
    huge = retry_at(now, base, 100, rng) - now  # no overflow: capped
    assert huge <= MAX_RETRY_DELAY * 1.15
    assert retry_at(now, timedelta(0), 3, rng) == now


# -- the consumer ---------------------------------------------------------------------------------


def test_runs_a_job_and_records_success(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    marker = tmp_path / "ran"
    config = load_config(
        write_config(
            tmp_path,
            f'[jobs.a]\nevery = "1m"\ncommand = "echo $CHRONOD_RUN_ID > {marker}; echo out"\n',
        )
    )
    run = enqueue(store, config, "a")
    consumer = consumer_for(consumers, store, config)
    claim = consumer.step()
    assert claim is not None
    assert claim.run.run_id == run.run_id
    assert marker.read_text().strip() == run.run_id
    [entry] = history(store, "a")
    assert (entry.state, entry.exit_code, entry.output) == (Outcome.SUCCEEDED, 0, "out\n")
    assert entry.worker == consumer.worker_id
    seen = {w.worker: w for w in store.workers()}
    assert seen[consumer.worker_id].queues == ("default",)


def test_mismatched_digest_is_refused_without_running(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    marker = tmp_path / "ran"
    config = load_config(
        write_config(tmp_path, f'[jobs.a]\nevery = "1m"\ncommand = "touch {marker}"\n')
    )
    run = enqueue(store, config, "a", digest="0123456789abcdef")
    consumer = consumer_for(consumers, store, config)
    assert consumer.step() is not None
    assert not marker.exists()
    [entry] = history(store, "a")
    assert entry.run_id == run.run_id
    assert entry.state is Outcome.CONFIG_MISMATCH
    assert entry.error == (
        f"job 'a' on host {consumer.host}: definition differs from the dispatcher's "
        f"(digest {config.jobs['a'].digest} here ≠ 0123456789abcdef in the run)"
    )
    assert store.live_runs("a") == []


def test_unknown_job_is_refused(store: Store, tmp_path: Path, consumers: list[Consumer]) -> None:
    config = load_config(write_config(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "true"\n'))
    enqueue(store, config, "ghost")
    consumer = consumer_for(consumers, store, config)
    assert consumer.step() is not None
    [entry] = history(store, "ghost")
    assert entry.state is Outcome.CONFIG_MISMATCH
    assert str(entry.error).startswith(f"unknown job 'ghost' on host {consumer.host}")


def test_a_worker_behind_its_file_rereads_it_before_refusing(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    marker = tmp_path / "ran"
    old = load_config(
        write_config(tmp_path, f'[jobs.a]\nevery = "1m"\ncommand = "echo 1 > {marker}"\n')
    )
    consumer = consumer_for(consumers, store, old)
    new = load_config(
        write_config(tmp_path, f'[jobs.a]\nevery = "1m"\ncommand = "echo 2 > {marker}"\n')
    )
    assert new.jobs["a"].digest != old.jobs["a"].digest
    enqueue(store, new, "a")
    consumer.step()
    assert marker.read_text() == "2\n"
    assert history(store, "a")[0].state is Outcome.SUCCEEDED


def test_a_reload_runs_changed_call_code_with_a_new_fork_server(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    # The fork server keeps a call's module imported between runs; after a deploy, a reload
    # (SIGHUP) must make the next run use the new code.
    lib = tmp_path / "lib"
    lib.mkdir()
    name = f"reloadmod_{uuid.uuid4().hex[:8]}"
    target = lib / f"{name}.py"
    target.write_text("def work():\n    print('v1')\n")
    sys.path.insert(0, str(lib))
    try:
        config = load_config(
            write_config(tmp_path, f'[jobs.a]\nevery = "1m"\ncall = "{name}:work"\n')
        )
        consumer = consumer_for(consumers, store, config)
        for _ in range(2):
            enqueue(store, config, "a")
            assert consumer.step() is not None
        # (another size: a .pyc written in the same second is judged by mtime and size)
        target.write_text("def work():\n    print('version 2')\n")
        enqueue(store, config, "a")
        consumer.step()
        assert history(store, "a")[-1].output == "v1\n"  # cached: still the imported code
        consumer.request_reload()
        enqueue(store, config, "a")
        consumer.step()
        assert history(store, "a")[-1].output == "version 2\n"
    finally:
        sys.path.remove(str(lib))


def test_failures_are_retried_with_growing_delays(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    config = load_config(
        write_config(
            tmp_path,
            '[jobs.f]\nevery = "1m"\ncommand = "echo no; exit 3"\nretries = 2\n'
            'retry_delay = "300ms"\n',
        )
    )
    run = enqueue(store, config, "f")
    consumer = consumer_for(consumers, store, config)
    step_until(consumer, lambda: not store.live_runs("f"))
    entries = history(store, "f")
    assert [(e.attempt, e.state, e.exit_code) for e in entries] == [
        (1, Outcome.FAILED, 3),
        (2, Outcome.FAILED, 3),
        (3, Outcome.FAILED, 3),
    ]
    assert {e.run_id for e in entries} == {run.run_id}
    gaps = []
    for done, following in itertools.pairwise(entries):
        assert done.finished_at is not None
        assert following.started_at is not None
        gaps.append((following.started_at - done.finished_at).total_seconds())
    assert gaps[0] >= 0.3 * 0.85
    assert gaps[1] >= 0.6 * 0.85
    assert gaps[1] > gaps[0]
    assert gaps[1] < 0.6 * 1.15 + 2.0  # claimed promptly once due


def test_a_timed_out_attempt_is_recorded_as_timed_out(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    config = load_config(
        write_config(
            tmp_path, '[jobs.t]\nevery = "1m"\ncommand = "exec sleep 30"\ntimeout = "1s"\n'
        )
    )
    enqueue(store, config, "t")
    consumer_for(consumers, store, config).step()
    [entry] = history(store, "t")
    assert entry.state is Outcome.TIMED_OUT
    assert entry.exit_code == 128 + signal.SIGTERM
    assert str(entry.error).startswith("timed out after 1s")


def test_sigterm_drains_then_hands_the_run_back(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    started = tmp_path / "started"
    config = load_config(
        write_config(
            tmp_path, f'[jobs.s]\nevery = "1m"\ncommand = "echo $$ > {started}; exec sleep 30"\n'
        )
    )
    run = enqueue(store, config, "s")
    consumer = consumer_for(consumers, store, config, drain_timeout=timedelta(seconds=0.3))
    when_file(started, consumer.request_stop)
    begun = time.monotonic()
    consumer.step()
    assert time.monotonic() - begun < 5.0
    assert consumer.stopping
    [live] = store.live_runs("s")
    assert (live.run_id, live.state, live.attempt) == (run.run_id, RunState.QUEUED, 0)
    assert history(store, "s") == []
    assert not alive(int(started.read_text()))


def test_a_run_that_finishes_within_the_drain_is_recorded(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    started = tmp_path / "started"
    config = load_config(
        write_config(tmp_path, f'[jobs.s]\nevery = "1m"\ncommand = "touch {started}; sleep 0.3"\n')
    )
    enqueue(store, config, "s")
    consumer = consumer_for(consumers, store, config, drain_timeout=timedelta(seconds=20))
    when_file(started, consumer.request_stop)
    consumer.step()
    assert consumer.stopping
    assert [e.state for e in history(store, "s")] == [Outcome.SUCCEEDED]


def test_second_sigint_kills_at_once_and_hands_back(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    started = tmp_path / "started"
    script = f"trap '' TERM; touch {started}; while :; do sleep 0.05; done"
    config = load_config(
        write_config(tmp_path, f'[jobs.s]\nevery = "1m"\ncommand = "{script}"\nkill_grace = "1m"\n')
    )
    enqueue(store, config, "s")
    consumer = consumer_for(consumers, store, config, drain_timeout=timedelta(minutes=1))

    def twice() -> None:
        consumer.request_stop()
        consumer.request_stop(immediate=consumer.stopping)  # what the SIGINT handler does

    when_file(started, twice)
    begun = time.monotonic()
    consumer.step()
    assert time.monotonic() - begun < 5.0
    [live] = store.live_runs("s")
    assert (live.state, live.attempt) == (RunState.QUEUED, 0)


class FlakyStore:
    """Delegates to a store, failing chosen methods with StoreUnavailable while told to."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.failing: dict[str, int] = {}  # method → failures left (-1: until cleared)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            left = self.failing.get(name, 0)
            if left:
                self.failing[name] = left - 1 if left > 0 else -1
                raise StoreUnavailable(f"{name}: simulated outage")
            return method(*args, **kwargs)

        return call


def test_finish_is_retried_while_the_store_is_unavailable(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    config = load_config(write_config(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "true"\n'))
    enqueue(store, config, "a")
    flaky = FlakyStore(store)
    flaky.failing["finish"] = 3
    consumer = Consumer(flaky, ConfigSource(config), FAST)  # type: ignore[arg-type]
    consumers.append(consumer)
    consumer.step()
    assert flaky.failing["finish"] == 0
    assert [e.state for e in history(store, "a")] == [Outcome.SUCCEEDED]


def test_lost_lease_kills_the_run_and_discards_its_result(
    store: Store, tmp_path: Path, consumers: list[Consumer]
) -> None:
    started = tmp_path / "started"
    config = load_config(
        write_config(
            tmp_path,
            f'[jobs.s]\nevery = "1m"\ncommand = "echo $$ > {started}; exec sleep 30"\n'
            "retries = 1\n",  # or the reclaimed run would end lost instead of being retried
        )
    )
    run = enqueue(store, config, "s")
    flaky = FlakyStore(store)
    flaky.failing["heartbeat"] = -1  # heartbeats do not get through: the lease runs out
    ttl = timedelta(seconds=0.6)
    consumer = Consumer(
        flaky,  # type: ignore[arg-type]
        ConfigSource(config),
        ConsumerSettings(**{**FAST.__dict__, "attempt_ttl": ttl}),
    )
    consumers.append(consumer)
    stolen: list[Any] = []

    def reclaim_elsewhere() -> None:
        def take() -> Any:
            return store.claim(
                "elsewhere:1", ["default"], uuid.uuid4().hex, timedelta(minutes=1), 0
            )

        stolen.append(wait_until(take, timeout=10, what="the run to be reclaimable"))
        flaky.failing["heartbeat"] = 0  # the store is back: the next heartbeat is refused

    when_file(started, reclaim_elsewhere)
    consumer.step()
    assert not alive(int(started.read_text()))
    assert stolen[0].run.run_id == run.run_id
    assert history(store, "s") == []  # the first attempt's result was never recorded
    [live] = store.live_runs("s")
    assert (live.state, live.worker, live.attempt) == (RunState.RUNNING, "elsewhere:1", 2)
    assert store.finish(run.run_id, stolen[0].token, AttemptResult(outcome=Outcome.SUCCEEDED)) is (
        FinishStatus.ACCEPTED
    )


# -- the pool (real forked children) --------------------------------------------------------------


@dataclass
class Backend:
    url: str
    namespace: str
    store: Store

    def settings(self, config_dir: Path) -> StoreSettings:
        return StoreSettings(url=self.url, config_dir=config_dir, namespace=self.namespace)

    def header(self) -> str:
        return f'[chronod]\nnamespace = "{self.namespace}"\n{HEADER}'


@pytest.fixture
def backend(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Like the ``store`` fixture, plus a URL that other processes can open."""
    if store_kind == "sqlite":
        url, namespace = f"sqlite:///{tmp_path}/state.db", "chronod"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        url, namespace = server.url, f"t{uuid.uuid4().hex[:12]}"
    store = open_store(StoreSettings(url=url, config_dir=tmp_path, namespace=namespace))
    yield Backend(url, namespace, store)
    store.close()


@pytest.fixture
def pools() -> Iterator[list[WorkerPool]]:
    """Pools started by a test; whatever is left is stopped (children SIGKILLed) at the end."""
    started: list[WorkerPool] = []
    yield started
    for pool in started:
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)
        pool.stop()


def start_pool(
    pools: list[WorkerPool], backend: Backend, config: Config, **settings: Any
) -> WorkerPool:
    values: dict[str, Any] = {
        "concurrency": 2,
        "attempt_ttl": timedelta(seconds=3),
        "drain_timeout": timedelta(seconds=5),
        "claim_wait": 0.2,
    }
    values.update(settings)
    pool = WorkerPool(
        config=config, store=backend.settings(config.directory), settings=PoolSettings(**values)
    )
    pools.append(pool)
    pool.start()
    return pool


def registered(store: Store, pids: list[int]) -> bool:
    seen = {w.worker.rsplit(":", 1)[1] for w in store.workers()}
    return all(str(pid) in seen for pid in pids)


def test_pool_respawns_a_child_killed_with_sigkill(
    backend: Backend, tmp_path: Path, pools: list[WorkerPool]
) -> None:
    marker = tmp_path / "ran"
    config = load_config(
        write_config(
            tmp_path,
            f'[jobs.a]\nevery = "1m"\ncommand = "echo $CHRONOD_RUN_ID >> {marker}"\n',
            backend.header(),
        )
    )
    pool = start_pool(pools, backend, config)
    first = pool.pids()
    assert len(first) == 2
    wait_until(lambda: registered(backend.store, first), timeout=10, what="children registering")
    os.kill(first[0], signal.SIGKILL)

    def replaced() -> bool:
        pool.check()
        pids = pool.pids()
        return len(pids) == 2 and first[0] not in pids

    wait_until(replaced, timeout=10, what="the killed child to be replaced")
    assert first[1] in pool.pids()
    wait_until(
        lambda: registered(backend.store, pool.pids()), timeout=10, what="new child registering"
    )
    run = enqueue(backend.store, config, "a")
    wait_until(lambda: history(backend.store, "a"), timeout=10, what="the run to finish")
    assert history(backend.store, "a")[0].state is Outcome.SUCCEEDED
    assert marker.read_text() == f"{run.run_id}\n"
    pool.stop()
    assert pool.pids() == []


def test_pool_stop_drains_and_hands_back(
    backend: Backend, tmp_path: Path, pools: list[WorkerPool]
) -> None:
    started = tmp_path / "started"
    config = load_config(
        write_config(
            tmp_path,
            f'[jobs.s]\nevery = "1m"\ncommand = "echo $$ > {started}; exec sleep 30"\n'
            'kill_grace = "1s"\n',
            backend.header(),
        )
    )
    pool = start_pool(pools, backend, config, concurrency=1, drain_timeout=timedelta(seconds=0.5))
    run = enqueue(backend.store, config, "s")
    wait_until(started.exists, timeout=10, what="the run to start")
    child = pool.pids()[0]
    begun = time.monotonic()
    pool.stop()
    assert time.monotonic() - begun < 5.0
    assert not alive(child)
    assert not alive(int(started.read_text()))
    [live] = backend.store.live_runs("s")
    assert (live.run_id, live.state, live.attempt) == (run.run_id, RunState.QUEUED, 0)


def test_children_of_a_killed_supervisor_exit(backend: Backend, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    config = load_config(
        write_config(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "true"\n', backend.header())
    )
    supervisor = os.fork()
    if supervisor == 0:  # a throwaway supervisor process, killed below
        code = 1
        try:
            pool = WorkerPool(
                config=config,
                store=backend.settings(tmp_path),
                settings=PoolSettings(concurrency=2, claim_wait=0.2),
            )
            pool.start()
            write_atomically(pids_file, " ".join(map(str, pool.pids())))
            signal.pause()
        finally:
            os._exit(code)

    def children_started() -> list[str] | None:
        return pids_file.read_text().split() if pids_file.exists() else None

    try:
        children = wait_until(children_started, timeout=10, what="the supervisor's children")
        os.kill(supervisor, signal.SIGKILL)
        os.waitpid(supervisor, 0)
        wait_until(
            lambda: not any(alive(int(pid)) for pid in children),
            timeout=10,
            what="orphaned children to exit",
        )
    finally:
        for pid in pids_file.read_text().split() if pids_file.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


# -- `chronod worker` -----------------------------------------------------------------------------


def test_chronod_worker_runs_jobs_and_stops_on_sigterm(
    backend: Backend, tmp_path: Path, procs: Processes
) -> None:
    marker = tmp_path / "ran"
    path = write_config(
        tmp_path,
        f'[jobs.a]\nevery = "1m"\ncommand = "echo $CHRONOD_RUN_ID > {marker}"\n',
        backend.header(),
    )
    config = load_config(path)
    worker = procs.worker(path, backend.url, concurrency=1)
    worker.wait_for_log("worker started", timeout=15)
    run = enqueue(backend.store, config, "a")
    wait_until(lambda: history(backend.store, "a"), timeout=10, what="the run to finish")
    assert marker.read_text() == f"{run.run_id}\n"
    started = worker.wait_for_log("^started$", timeout=5)
    assert started.fields["run_id"] == run.run_id
    assert started.fields["job"] == "a"
    finished = worker.wait_for_log("^finished$", timeout=5)
    assert finished.fields["outcome"] == "succeeded"
    worker.term()
    assert worker.wait_exit(timeout=10) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "bogus://x", "worker"], "unknown scheme"),
        (["worker", "--queue", "no spaces"], "--queue 'no spaces'"),
        (["worker", "--concurrency", "0"], "--concurrency"),
    ],
)
def test_chronod_worker_usage_errors_exit_2(
    tmp_path: Path, procs: Processes, args: list[str], message: str
) -> None:
    path = write_config(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "true"\n')
    process = procs.spawn("worker", ["--config", str(path), *args])
    assert process.wait_exit(timeout=20) == 2
    output = process.log_path.read_text()
    assert message in output
    assert "Traceback" not in output


def test_chronod_worker_with_a_bad_config_exits_2(tmp_path: Path, procs: Processes) -> None:
    path = write_config(tmp_path, '[jobs.a]\nevery = "1m"\n')
    process = procs.spawn("worker", ["--config", str(path), "worker"])
    assert process.wait_exit(timeout=20) == 2
    assert "needs exactly one of 'command', 'call' or 'celery'" in process.log_path.read_text()
