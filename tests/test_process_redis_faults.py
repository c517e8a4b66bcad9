"""Exactly once when Redis itself fails (issue 11): real servers, real ``chronod`` processes.

Every scenario runs two ``chronod run`` daemons (``--workers 0``) and one ``chronod worker`` on a
one-second interval job with ``catchup = "all"``, ``grace = "60s"`` and ``overlap = "allow"``
whose body appends ``CHRONOD_RUN_ID`` to a file (:func:`tests.procs.record_run`). Then Redis fails:

* Sentinel (a primary, a replica, three sentinels; ``replica_acks`` 1 by default): the primary is
  killed while the replica is in sync, and again while the replica has been stopped for a few
  seconds (it lags: a failover promotes it without those seconds);
* a single server restarted from a snapshot taken seconds before it was killed (a rollback);
* Redis Cluster (three primaries with a replica each): the daemons are given a node that does
  not own the namespace's slot, the slot is migrated while runs go on, and its primary is killed.

The verdict is the same everywhere (:func:`verdict`): no run id ran twice, and every slot of the
observed window either ran exactly once or is recorded ``uncertain`` in the job's history.
Durations are kept short (2 s lease, 1 s failure detection) for the 2-core CI budget.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from redis.crc import key_slot

from chronod.instants import format_utc
from chronod.store import StoreSettings, open_store
from chronod.store.base import Outcome, Store
from chronod.store.keys import KeySpace
from chronod.tz import UTC
from tests.procs import ChronodProcess, Processes, wait_until, write_atomically
from tests.redis_server import Cluster, RedisServer, SentinelSet

pytestmark = [pytest.mark.process, pytest.mark.redis]

JOB = "tick"
STARTUP = 30.0
FAILOVER = 45.0
SECOND = timedelta(seconds=1)


def write_config(directory: Path, store: str, runs: Path, **daemon: object) -> Path:
    daemon = {"attempt_lease": "3s", **daemon}
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in daemon.items())
    text = (
        "[chronod]\n"
        f"store = {json.dumps(store)}\n"
        'lease = "2s"\n'
        f"{extra}"
        "\n[defaults]\n"
        'timezone = "UTC"\n'
        f"\n[jobs.{JOB}]\n"
        'every = "1s"\n'
        'catchup = "all"\n'
        'grace = "60s"\n'
        'overlap = "allow"\n'
        'call = "tests.procs:record_run"\n'
        f"args = [{json.dumps(str(runs))}]\n"
    )
    path = directory / "schedules.toml"
    write_atomically(path, text)
    return path


def ran(runs: Path) -> list[str]:
    """Run ids in the order their bodies started (one line per execution)."""
    if not runs.exists():
        return []
    return [line.split()[0] for line in runs.read_text().splitlines() if line.strip()]


def slot_of(run_id: str) -> datetime:
    return datetime.fromisoformat(run_id.split("@", 1)[1].replace("Z", "+00:00"))


def start_all(procs: Processes, config: Path, url: str) -> list[ChronodProcess]:
    first = procs.run(config, url, name="first")
    first.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    second = procs.run(config, url, name="second")
    worker = procs.worker(config, url, concurrency=2)
    second.wait_for_log(r"^chronod starting", timeout=STARTUP)
    return [first, second, worker]


def wait_runs(runs: Path, more: int, processes: list[ChronodProcess], timeout: float) -> None:
    """Wait until ``more`` runs beyond those recorded now have executed."""
    have = len(ran(runs))
    wait_until(
        lambda: len(ran(runs)) >= have + more,
        timeout=timeout,
        what=f"{more} more runs",
        context=lambda: "\n".join(p.tail(25) for p in processes),
    )


def settled(store: Store, runs: Path, until: datetime) -> bool:
    """Every slot up to ``until`` is decided and nothing of the job is live any more."""
    state = store.job_states().get(JOB)
    return bool(
        state is not None
        and state.watermark is not None
        and state.watermark >= until
        and not [r for r in store.live_runs(JOB) if r.slot <= until]
    )


def verdict(store: Store, runs: Path, first: datetime, last: datetime) -> tuple[int, int]:
    """No run twice; every slot in [first, last] ran once or is recorded uncertain. Returns
    (slots that ran, slots recorded uncertain)."""
    executed = Counter(ran(runs))
    twice = sorted(run_id for run_id, n in executed.items() if n > 1)
    assert not twice, f"slots run more than once: {twice}"
    history = store.history(JOB, 100_000)
    uncertain = {r.slot for r in history if r.state is Outcome.UNCERTAIN}
    other = Counter(r.state for r in history if r.state is not Outcome.SUCCEEDED)
    slots = {slot_of(run_id) for run_id in executed}
    missing = []
    instant = first
    while instant <= last:
        if instant not in slots and instant not in uncertain:
            missing.append(format_utc(instant))
        instant += SECOND
    assert not missing, f"slots neither run nor recorded uncertain: {missing}; history: {other}"
    return len([s for s in slots if first <= s <= last]), len(
        [s for s in uncertain if first <= s <= last]
    )


def finish(procs: Processes, store: Store, runs: Path) -> tuple[int, int]:
    """Let the window close: wait until every slot up to a few seconds from now is decided and
    run, then judge [first run, that instant]."""
    until = datetime.now(UTC).replace(microsecond=0) + 2 * SECOND
    processes = procs.alive()
    wait_until(
        lambda: settled(store, runs, until),
        timeout=FAILOVER,
        what=f"every slot up to {format_utc(until)} decided and run",
        context=lambda: "\n".join(p.tail(25) for p in processes),
    )
    first = min(slot_of(run_id) for run_id in ran(runs))
    return verdict(store, runs, first, until)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    deployment = SentinelSet(tmp_path / "sentinel")
    deployment.start()
    yield deployment
    deployment.stop()


def restart_as_replica(deployment: SentinelSet, node: RedisServer) -> None:
    """Bring a killed primary back: the sentinels turn it into a replica of the new primary."""
    node.start()
    wait_until(
        lambda: (
            node.client().info("replication")["role"] == "slave"
            and node.client().info("replication").get("master_link_status") == "up"
        ),
        timeout=FAILOVER,
        what=f"{node.port} back as a replica",
    )


def test_sentinel_failover_in_sync_and_lagging(
    sentinel_set: SentinelSet, procs: Processes, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    url = sentinel_set.url()
    # A claim a replica saw but did not acknowledge in time is handed back by its worker once
    # the store answers again; the attempt lease must outlast the failover for that to win the
    # race against another worker reaping it as 'lost' (docs/redis.md). 30 s is the default.
    config = write_config(tmp_path, url, runs, attempt_lease="30s")
    processes = start_all(procs, config, url)
    store = open_store(StoreSettings(url=url, config_dir=tmp_path))
    try:
        wait_runs(runs, 3, processes, STARTUP)
        # 1. The primary dies with the replica in sync: nothing acknowledged is lost.
        old = sentinel_set.primary
        old.kill()
        new = sentinel_set.wait_failover(old.port, FAILOVER)
        restart_as_replica(sentinel_set, old)  # replica_acks = 1 needs a replica again
        wait_runs(runs, 3, processes, FAILOVER)
        # 2. The replica stops (its link cut) for 3 s, then the primary dies: the promoted replica
        # lacks those seconds. With replica_acks = 1 nothing of them was relied on.
        sentinel_set.cut(old, new)
        hold = datetime.now(UTC) + 3 * SECOND
        wait_until(lambda: datetime.now(UTC) >= hold, timeout=10, what="the lag window")
        new.kill()
        old.resume()
        sentinel_set.wait_failover(new.port, FAILOVER)
        restart_as_replica(sentinel_set, new)
        wait_runs(runs, 3, processes, FAILOVER)
        executed, uncertain = finish(procs, store, runs)
        # Acknowledged by a replica before anything relied on it: nothing is even uncertain.
        assert uncertain == 0
        assert executed >= 9
    finally:
        store.close()


def test_sentinel_without_acknowledgements_detects_the_lagging_replica(
    sentinel_set: SentinelSet, procs: Processes, tmp_path: Path
) -> None:
    """``replica_acks = 0``: the promoted replica lacks the last seconds. Nothing runs twice; what
    ran in those seconds is recorded uncertain."""
    runs = tmp_path / "runs.txt"
    url = sentinel_set.url()
    config = write_config(tmp_path, url, runs, replica_acks=0)
    processes = start_all(procs, config, url)
    store = open_store(StoreSettings(url=url, config_dir=tmp_path))
    try:
        wait_runs(runs, 3, processes, STARTUP)
        [replica] = sentinel_set.replicas
        sentinel_set.cut(replica, sentinel_set.primary)
        wait_runs(runs, 3, processes, STARTUP)  # these runs exist on the primary only
        sentinel_set.primary.kill()
        replica.resume()
        sentinel_set.wait_failover(sentinel_set.primary.port, FAILOVER)
        wait_runs(runs, 3, processes, FAILOVER)
        executed, uncertain = finish(procs, store, runs)
        assert uncertain >= 1
        assert executed >= 9
    finally:
        store.close()


def test_standalone_restart_from_an_older_snapshot(procs: Processes, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    runs = tmp_path / "runs.txt"
    try:
        config = write_config(tmp_path, server.url, runs)
        processes = start_all(procs, config, server.url)
        wait_runs(runs, 3, processes, STARTUP)
        server.client().save()  # the snapshot the server will come back from
        wait_runs(runs, 4, processes, STARTUP)
        server.kill()
        server.start()  # loads dump.rdb: the store is 4 s older than every process has seen
        wait_runs(runs, 3, processes, FAILOVER)
        store = open_store(StoreSettings(url=server.url, config_dir=tmp_path))
        try:
            executed, uncertain = finish(procs, store, runs)
        finally:
            store.close()
        assert uncertain >= 1, "the slots that ran in the lost window must be recorded"
        assert executed >= 9
        noticed = [p for p in processes if p.find(r"went back to an older state")]
        assert noticed, "no process logged the rollback"
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    deployment = Cluster(tmp_path / "cluster")
    deployment.start()
    yield deployment
    deployment.stop()


def test_cluster_any_node_migration_and_failover(
    cluster: Cluster, procs: Processes, tmp_path: Path
) -> None:
    slot = key_slot(KeySpace("chronod").lease.encode())
    owner = cluster.owner(slot)
    stranger = next(n for n in cluster.primaries_now() if n is not owner)
    url = cluster.url(stranger)  # a node that does not serve the namespace: MOVED from the start
    runs = tmp_path / "runs.txt"
    config = write_config(tmp_path, url, runs)
    processes = start_all(procs, config, url)
    store = open_store(StoreSettings(url=url, config_dir=tmp_path))
    try:
        wait_runs(runs, 3, processes, STARTUP)
        # The slot moves, a few keys at a time, while daemons and workers use it.
        moved = cluster.migrate(slot, stranger, batch=3, pause=0.05)
        assert moved > 0
        assert cluster.owner(slot) is stranger
        wait_runs(runs, 3, processes, FAILOVER)
        # Its new primary dies: the cluster promotes that primary's replica.
        stranger.kill()
        wait_until(
            lambda: cluster.owner(slot) is not stranger and cluster.healthy(),
            timeout=FAILOVER,
            what="the cluster to fail the slot over",
        )
        stranger.start()  # rejoins as a replica: replica_acks = 1 needs one
        wait_runs(runs, 3, processes, FAILOVER)
        executed, uncertain = finish(procs, store, runs)
        assert uncertain == 0
        assert executed >= 9
    finally:
        store.close()
