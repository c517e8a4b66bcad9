"""Physical limits of this machine that bound a run's cost: a process per run, a Redis round trip.

``fork``
    ``fork()`` + ``_exit(0)`` in the child + ``waitpid`` in the parent, from a fresh interpreter
    that imports what the fork server does (:mod:`chronod._forkserver`): the least a run in a
    process of its own costs, before it does anything. Wall time and CPU (parent and children).
``redis``
    Sequential round trips of one redis-py client to a private ``redis-server`` on loopback:
    ``PING``, and ``EVALSHA`` of a one-command script (a claim or a finish is one script each).

    .venv/bin/python -m bench.bench_limits [--forks 2000] [--trips 5000]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.benchlib import machine, reproduce

REPEATS = 3


# Run in a fresh interpreter that imports only what the fork server does: a fork's cost grows
# with the forking process's memory, and this script's own imports would inflate it.
FORK_PROGRAM = """
import os, sys, time
import chronod._forkserver
forks = int(sys.argv[1])
before, began = os.times(), time.perf_counter()
for _ in range(forks):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
wall, after = time.perf_counter() - began, os.times()
rss = [line for line in open("/proc/self/status") if line.startswith("VmRSS:")][0].split()[1]
print(wall / forks, (sum(after[:4]) - sum(before[:4])) / forks, int(rss))
"""


def fork_cost(forks: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, RSS KiB of the forking process) per fork + exit + wait; CPU is
    the parent's and the children's."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", FORK_PROGRAM, str(forks)],
        check=True,
        capture_output=True,
        text=True,
    )
    wall, cpu, rss = done.stdout.split()
    return float(wall), float(cpu), int(rss)


def round_trips(call: Callable[[], object], trips: int) -> float:
    """Round trips per second, one after the other."""
    began = time.perf_counter()
    for _ in range(trips):
        call()
    return trips / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tests.redis_server import RedisServer

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--forks", type=int, default=2000)
    parser.add_argument("--trips", type=int, default=5000)
    args = parser.parse_args(argv)
    print(f"limits; {machine()}")
    for _ in range(REPEATS):
        wall, cpu, rss = fork_cost(args.forks)
        print(
            f"  fork + exit + wait of a {rss / 1024:.1f} MiB process (the fork server's imports): "
            f"{wall * 1e3:.3f} ms wall, {cpu * 1e3:.3f} ms CPU"
        )
    with tempfile.TemporaryDirectory(prefix="chronod-limits-") as scratch:
        server = RedisServer(Path(scratch))
        server.start()
        try:
            client = server.client()
            sha = client.script_load("return redis.call('INCR', KEYS[1])")
            calls: dict[str, Callable[[], object]] = {
                "PING": client.ping,
                "EVALSHA (one INCR)": lambda: client.evalsha(sha, 1, "limits"),
            }
            for what, call in calls.items():
                rates = [round_trips(call, args.trips) for _ in range(REPEATS)]
                print(
                    f"  redis-py {what}, one client: {min(rates):,.0f}–{max(rates):,.0f} round "
                    f"trips/s ({1e6 / max(rates):.0f}–{1e6 / min(rates):.0f} µs each)"
                )
        finally:
            server.stop()
    print(f"\n{reproduce('bench_limits', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
