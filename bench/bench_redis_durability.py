"""What replica acknowledgements cost, and how long a Redis failover stops the runs (issue 11).

``cost`` (Sentinel: a primary, one replica, three sentinels on loopback): per slot and per run
with ``replica_acks`` 0 and 1, measured through the store API (no processes in the way):

* dispatch, batch: 1,000 slots due at once, one ``dispatch`` call (per-slot cost);
* dispatch, single: one slot per call (the round trips a quiet leader pays per slot);
* run: one ``claim`` + ``finish`` per run, the store cost a worker pays per run.

``gap`` (real processes: two ``chronod run --workers 0`` and a ``chronod worker`` on a 1 s job,
default ``replica_acks`` 1): the primary serving the namespace is SIGKILLed and the gap is the
time from the kill to the first run that starts afterwards (the job records its start time).
Sentinel (``--replicas``, default 2) promotes a replica (down-after 1 s) and points the other at
it; Redis Cluster (3 primaries, a replica each, node timeout 1 s) promotes the dead primary's
replica. The killed node is restarted once the failover happened (it comes back as a replica):
with a single replica it is the only one that can acknowledge again.

    .venv/bin/python -m bench.bench_redis_durability [cost|gap|both] [--trials 2] [--replicas 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from redis.crc import key_slot

from bench.benchlib import machine, percentile, reproduce, scratch
from chronod.store.base import AttemptResult, JobSync, Outcome, SlotDispatch
from chronod.store.keys import KeySpace
from chronod.store.redis import RedisStore
from tests.procs import Processes, wait_until
from tests.redis_server import Cluster, RedisServer, SentinelSet

STARTUP = 60.0
SUCCESS = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0)
MINUTE = timedelta(minutes=1)


def _items(jobs: list[str], at: object) -> list[SlotDispatch]:
    return [
        SlotDispatch(
            job=job,
            fingerprint="fp",
            slot=at,  # type: ignore[arg-type]
            next_due=None,
            queue="default",
            digest="d",
            overlap="allow",
            max_attempts=1,
            guard_ttl=timedelta(hours=24),
        )
        for job in jobs
    ]


def cost(url: str, acks: int, runs: int) -> dict[str, float]:
    """Seconds per slot (batch), per single-slot dispatch, and per run (claim + finish)."""
    store = RedisStore.from_url(url, namespace=f"b{uuid.uuid4().hex[:8]}", replica_acks=acks)
    try:
        lease = store.acquire_lease("bench", uuid.uuid4().hex, timedelta(minutes=5))
        assert lease is not None
        base = store.now().replace(microsecond=0) - timedelta(hours=2)
        jobs = [f"job{i}" for i in range(1000)]
        store.sync_jobs(
            lease, [JobSync(name=j, fingerprint="fp", next_due=None) for j in jobs], base
        )
        started = time.perf_counter()
        store.dispatch(lease, _items(jobs, base + MINUTE))
        batch = (time.perf_counter() - started) / len(jobs)
        started = time.perf_counter()
        for i in range(runs):
            store.dispatch(
                lease, _items([jobs[i % len(jobs)]], base + 2 * MINUTE + i * MINUTE / runs)
            )
        single = (time.perf_counter() - started) / runs
        started = time.perf_counter()
        for _ in range(runs):
            claim = store.claim("bench:1", ["default"], uuid.uuid4().hex, MINUTE, 0)
            assert claim is not None
            store.finish(claim.run.run_id, claim.token, SUCCESS)
        per_run = (time.perf_counter() - started) / runs
        return {"batch": batch, "single": single, "run": per_run}
    finally:
        store.close()


def bench_cost(trials: int, runs: int, keep: bool) -> None:
    with scratch("durability", keep) as directory:
        deployment = SentinelSet(directory / "sentinel")
        deployment.start()
        try:
            url = deployment.url()
            for acks in (0, 1):
                samples = [cost(url, acks, runs) for _ in range(trials)]
                med = {k: percentile([s[k] for s in samples], 50) for k in samples[0]}
                print(
                    f"  Sentinel, replica_acks = {acks}: dispatch "
                    f"{med['batch'] * 1e6:6.1f} µs/slot in a batch of 1,000, "
                    f"{med['single'] * 1e3:5.2f} ms per single-slot call; "
                    f"claim + finish {med['run'] * 1e3:5.2f} ms/run ({trials} trials)"
                )
        finally:
            deployment.stop()


def _config(directory: Path, url: str, runs: Path) -> Path:
    path = directory / "schedules.toml"
    path.write_text(
        f'[chronod]\nstore = {json.dumps(url)}\nlease = "2s"\nattempt_lease = "3s"\n'
        '[defaults]\ntimezone = "UTC"\n'
        '[jobs.tick]\nevery = "1s"\ncatchup = "all"\ngrace = "60s"\noverlap = "allow"\n'
        f'call = "tests.procs:record_run"\nargs = [{json.dumps(str(runs))}]\n'
    )
    return path


def _starts(runs: Path) -> list[tuple[float, float]]:
    """(slot, start) of each run, both as Unix times."""
    if not runs.exists():
        return []
    found = []
    for line in runs.read_text().splitlines():
        if line.strip():
            run_id, _, _, started = line.split()
            slot = datetime.fromisoformat(run_id.split("@", 1)[1].replace("Z", "+00:00"))
            found.append((slot.timestamp(), float(started)))
    return found


def gap(
    directory: Path, url: str, kill: Callable[[], RedisServer], after: Callable[[RedisServer], None]
) -> float:
    """Seconds from killing the serving primary to the first run of a slot due after the kill
    (a run of an earlier slot may still start just after the kill: it was claimed before)."""
    runs = directory / "runs.txt"
    config = _config(directory, url, runs)
    with Processes(directory / "logs", show_logs=False) as procs:
        first = procs.run(config, url, name="first")
        first.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
        procs.run(config, url, name="second")
        procs.worker(config, url, concurrency=2)
        wait_until(lambda: len(_starts(runs)) >= 3, timeout=STARTUP, what="three runs")
        killed_at = time.time()
        victim = kill()
        after(victim)
        found = wait_until(
            lambda: [started for slot, started in _starts(runs) if slot > killed_at],
            timeout=STARTUP,
            what="a run after the kill",
        )
        return min(found) - killed_at


def sentinel_gap(directory: Path, replicas: int) -> float:
    sentinel = SentinelSet(directory / "sentinel", replicas=replicas, down_after_ms=1000)
    sentinel.start()
    try:

        def kill_primary() -> RedisServer:
            sentinel.primary.kill()
            return sentinel.primary

        def back(node: RedisServer) -> None:
            sentinel.wait_failover(node.port)
            node.start()

        return gap(directory, sentinel.url(), kill_primary, back)
    finally:
        sentinel.stop()


def cluster_gap(directory: Path, replicas: int) -> float:
    cluster = Cluster(directory / "cluster")
    cluster.start()
    slot = key_slot(KeySpace("chronod").lease.encode())
    try:

        def kill_owner() -> RedisServer:
            owner = cluster.owner(slot)
            owner.kill()
            return owner

        def rejoin(node: RedisServer) -> None:
            wait_until(
                lambda: cluster.owner(slot) is not node,
                timeout=STARTUP,
                what="the cluster failover",
            )
            node.start()

        return gap(directory, cluster.url(*cluster.primaries_now()), kill_owner, rejoin)
    finally:
        cluster.stop()


def bench_gap(trials: int, replicas: int, keep: bool, only: str | None) -> None:
    for kind, measure in (("Sentinel", sentinel_gap), ("Cluster", cluster_gap)):
        if only is not None and kind.lower() != only:
            continue
        gaps = []
        for _ in range(trials):
            with scratch(f"gap-{kind.lower()}", keep) as directory:
                gaps.append(measure(directory, replicas))
        shape = f"{replicas} replica(s)" if kind == "Sentinel" else "1 replica per primary"
        print(
            f"  {kind} ({shape}): primary killed -> next run starts: "
            + ", ".join(f"{g:.2f} s" for g in gaps)
            + f" (median {percentile(gaps, 50):.2f} s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["cost", "gap", "both"], default="both")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300, help="single dispatches / runs per trial")
    parser.add_argument(
        "--replicas", type=int, default=2, help="Sentinel replicas for the gap (default 2)"
    )
    parser.add_argument("--only", choices=["sentinel", "cluster"], help="gap: one deployment")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories (logs)")
    args = parser.parse_args(argv)
    print(f"Redis durability: replica acknowledgements and failover gaps; {machine()}")
    if args.what in ("cost", "both"):
        bench_cost(args.trials, args.runs, args.keep)
    if args.what in ("gap", "both"):
        bench_gap(args.trials, args.replicas, args.keep, args.only)
    print(f"\n{reproduce('bench_redis_durability', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
