"""Where a large tick's time goes: the leader's cost per slot, split, for N slots due at once.

In one process, against a fresh store of each kind: N jobs (``every = "1h"``, one anchor a few
seconds ahead, so all N slots fall on one instant) are loaded as leader with chronod's own
:class:`~chronod.dispatch.Scheduler`; then, as the daemon does, the due jobs are planned just
before the instant (:meth:`Scheduler.prepare`) and dispatched at it (:meth:`Scheduler.tick`).
Figures per slot: planning (schedule math and plan, building the dispatch items), the tick's own
Python (checks, batching, settling the results), the store calls — of which, on Redis, the time
the server spent in the dispatch scripts (``INFO commandstats``, ``evalsha``); the rest is
packing, the round trip and decoding — and the leader's CPU per 1,000 slots; plus the lateness of
the last slot (tick end − the instant) and the leader's RSS after the tick. Each case runs in a
process of its own (so RSS is that case's); sizes 1k, 10k, 20k (the second-0 burst of
``bench_scale --case spread``) and 100k by default, so the slope shows, not a point.

This is the scheduler alone: the daemon's process (``bench_scale``) adds its loop, logging and
the lease renewals between batches, and measures lateness from the store's records.

    .venv/bin/python -m bench.bench_tick [--store sqlite|redis|postgres|both|all]
        [--jobs 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.benchlib import (
    STORE_CHOICES,
    BenchStore,
    bench_store,
    machine,
    reproduce,
    rss_mib,
    scratch,
    store_kinds,
    toml_jobs,
)
from chronod.config.loader import parse_config
from chronod.dispatch import Scheduler
from chronod.store.base import DispatchStatus, Store
from chronod.tz import UTC


@dataclass
class Figures:
    kind: str
    jobs: int
    load: float  # seconds: sync of N jobs as leader
    rss: float  # MiB: this process's RSS after the tick
    prepare: float  # seconds
    tick: float
    store: float  # inside store.dispatch (and advance_many) calls
    server: float | None  # Redis: inside the dispatch scripts
    cpu: float  # this process's CPU seconds during the tick
    late: float  # tick end − the instant (store time)

    def per_slot_us(self, seconds: float) -> float:
        return seconds / self.jobs * 1e6


class TimedStore:
    """``store`` with the time spent inside its dispatch calls added up."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.spent = 0.0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if name not in ("dispatch", "advance_many"):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - began

        return timed


def script_seconds(target: BenchStore) -> float | None:
    """Seconds the Redis server spent in scripts so far (None for other stores)."""
    if target.server is None:
        return None
    stats = target.server.client().info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0)) / 1e6


def measure(kind: str, jobs: int) -> Figures:
    with scratch(f"tick-{kind}") as directory, bench_store(kind, directory) as target:
        # Far enough ahead that loading N jobs ends before it, with room for a loaded machine
        # (seconds per 10,000 jobs on the development VM: SQLite and Redis 0.3-1, PostgreSQL 3).
        lead = 3 + jobs // (1200 if kind == "postgres" else 5000)
        instant = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
        anchor = instant.strftime("%Y-%m-%dT%H:%M:%S")
        body = {"every": "1h", "anchor": anchor}
        text = toml_jobs([(f"job{i:06d}", body) for i in range(jobs)], overlap="allow")
        config = parse_config(text.encode(), directory / "schedules.toml")
        store = target.open()
        try:
            lease = store.acquire_lease("bench", secrets.token_hex(8), timedelta(minutes=10))
            assert lease is not None, "a fresh store has no leader"
            timed = TimedStore(store)
            scheduler = Scheduler(timed)  # type: ignore[arg-type]  # a transparent proxy
            began = time.perf_counter()
            scheduler.load(lease, config.jobs)
            load = time.perf_counter() - began
            slot = scheduler.next_wake()
            assert slot == instant, (slot, instant)
            if store.now() >= slot:
                raise SystemExit(f"loading {jobs} jobs outlasted the lead time: raise it")
            began = time.perf_counter()
            scheduler.prepare(slot)
            prepare = time.perf_counter() - began
            time.sleep(max((slot - store.now()).total_seconds(), 0.0))
            server_before = script_seconds(target)
            cpu_before = time.process_time()
            began = time.perf_counter()
            report = scheduler.tick(lease, store.now())
            tick = time.perf_counter() - began
            cpu = time.process_time() - cpu_before
            late = (store.now() - slot).total_seconds()
            rss = rss_mib(os.getpid())[0]
            server_after = script_seconds(target)
            queued = sum(1 for _, r in report.dispatched if r.status is DispatchStatus.QUEUED)
            assert queued == jobs, f"{queued} of {jobs} slots queued"
            server = (
                None
                if server_before is None or server_after is None
                else server_after - server_before
            )
            return Figures(kind, jobs, load, rss, prepare, tick, timed.spent, server, cpu, late)
        finally:
            store.close()


def show(f: Figures) -> str:
    us = f.per_slot_us
    server = "" if f.server is None else f" (scripts {us(f.server):5.1f})"
    client = f.tick - f.store
    return (
        f"{f.kind:8} {f.jobs:>7,} jobs: µs per slot: plan {us(f.prepare):5.1f} | tick: "
        f"python {us(client):5.1f}, store {us(f.store):5.1f}{server} | "
        f"leader CPU {f.cpu / f.jobs * 1000 * 1000:6.1f} ms per 1,000 slots | last slot "
        f"{f.late * 1000:7.1f} ms late | load {f.load:5.2f} s | RSS {f.rss:5.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=STORE_CHOICES, default="both")
    parser.add_argument("--jobs", default="1000,10000,20000,100000", help="sizes, comma-separated")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a case's process
    args = parser.parse_args(argv)
    if args.one:
        print(show(measure(args.store, int(args.jobs))), flush=True)
        return 0
    print(machine())
    print(reproduce("bench_tick", argv))
    for kind in store_kinds(args.store):
        for jobs in args.jobs.split(","):
            case = ["--store", kind, "--jobs", jobs, "--one"]
            subprocess.run([sys.executable, "-m", "bench.bench_tick", *case], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
