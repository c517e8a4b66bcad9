"""Where a worker process spends one trivial run, without the store: starting it, and the rest.

Runs N attempts one after the other through :func:`chronod.runner.run_attempt` and one fork
server, as a worker child does between a claim and its result, for a trivial ``command``
(``true``, through ``/bin/sh -c``) and a trivial ``call`` (``os:getpid``). Per run:

``start``
    the worker's request → the fork server's ``started`` (the request's JSON, the fork of the
    server, the run's own session, signals and descriptors, and for a call the run's environment
    and standard streams; for a command its ``exec``).
``rest``
    ``started`` → the runner's report (the job itself, its exit, the server's ``exited`` message,
    the group found empty, the output collected).

Each kind twice: runs back to back (the fork server is never idle: what a worker draining a queue
does, but without the claim and result round trips between runs), and with ``--gap`` between runs
(the fork server idle meanwhile, as between a worker's runs: where the next run's process is
forked ahead of need, it is ready by then).

It also prints the CPU per run of the fork server and the runs it reaped (``/proc``; the worker's
own share is in ``bench_celery``'s CPU line): CPU rather than time is what decides throughput on
a saturated machine. The store's share (claim, result) is measured by ``bench_redis_durability
cost``; the whole path by ``bench_workers throughput``. The first fifth of the runs is a warm-up and
is not counted.

    .venv/bin/python -m bench.bench_runstart [--runs 500] [--gap 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bench.benchlib import machine, reproduce
from chronod._forkserver import ForkServer
from chronod.config import JobConfig, parse_config
from chronod.runner import RunInfo, Supervision, run_attempt
from chronod.tz import UTC

CONFIG = b'[defaults]\ntimezone = "UTC"\n[jobs.t]\nevery = "1m"\ncommand = "true"\n'
INFO = RunInfo(job="t", run_id="t@bench", slot=datetime(2026, 1, 1, tzinfo=UTC), attempt=1, epoch=1)


class _TimedServer(ForkServer):
    """A fork server client that notes how long each ``spawn`` (request → ``started``) took."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[float] = []

    def spawn(self, request: Mapping[str, Any], fds: Sequence[int]) -> int:
        began = time.perf_counter()
        pid = super().spawn(request, fds)
        self.spans.append(time.perf_counter() - began)
        return pid


class Measured(NamedTuple):
    starts: list[float]  # seconds, request → started, per counted run
    totals: list[float]  # seconds, the whole attempt, per counted run
    cpu: float  # seconds per run: the fork server and the runs (all runs, warm-up too)


def measure(job: JobConfig, runs: int, gap: float = 0.0) -> Measured:
    """Start and whole-attempt times of each counted run, and CPU per run; ``gap`` seconds
    between runs."""
    from bench.bench_celery import cpu_of

    server = _TimedServer()
    totals: list[float] = []
    cpu = 0.0
    try:
        server.ensure()
        for _ in range(runs):
            if gap:
                time.sleep(gap)
            began = time.perf_counter()
            report = run_attempt(job, INFO, Supervision(), server)
            totals.append(time.perf_counter() - began)
            if report.exit_code != 0:
                raise SystemExit(f"{job.kind} run failed: {report.error}")
        assert server.pid is not None
        cpu = sum(cpu_of(server.pid)) / runs  # its own, and the runs it reaped
    finally:
        server.close()
    warm = runs // 5
    return Measured(server.spans[warm:], totals[warm:], cpu)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--gap", type=float, default=2.0, help="ms between runs, second pass")
    args = parser.parse_args(argv)
    base = parse_config(CONFIG, Path("bench.toml")).jobs["t"]
    jobs = {"command": base, "call": replace(base, command=None, call="os:getpid")}
    print(f"run start: {args.runs} runs one after the other, one fork server; {machine()}")
    for gap in (0.0, args.gap / 1e3):
        print(f"  {f'{gap * 1e3:g} ms between runs' if gap else 'back to back'}:")
        for kind, job in jobs.items():
            starts, totals, cpu = measure(job, args.runs, gap)
            rest = [total - start for start, total in zip(starts, totals, strict=True)]
            total, start, after = (statistics.median(v) * 1e3 for v in (totals, starts, rest))
            print(
                f"    {kind:7}  median per run {total:.2f} ms: start {start:.2f}, "
                f"rest {after:.2f} ms; CPU of the fork server and the run {cpu * 1e3:.2f} ms"
            )
    print(f"\n{reproduce('bench_runstart', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
