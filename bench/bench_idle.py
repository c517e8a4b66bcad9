"""Idle cost: CPU used by a leading ``chronod run`` with 1,000 jobs, none due within the hour.

The jobs are daily crons and daily intervals whose next slots lie 2-3 hours ahead. Once the daemon
leads and has loaded them, its CPU time (user + system, all threads, from /proc) and its context
switches (how often its threads woke) are sampled over the measuring window. What remains is the
lease renewal every third of the TTL and a look at the store's clock every 5 s. For Redis the
server's own CPU over the window is shown too.

    .venv/bin/python -m bench.bench_idle [--store KIND] [--jobs 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.benchlib import (
    STORE_CHOICES,
    bench_store,
    cpu_seconds,
    machine,
    reproduce,
    scratch,
    store_kinds,
    toml_jobs,
)
from chronod.tz import UTC
from tests.procs import Processes

STARTUP = 120.0


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid``."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def quiet_jobs(count: int) -> list[tuple[str, dict[str, str]]]:
    """Jobs whose next slot is 2-3 hours away: half daily crons, half daily intervals."""
    later = datetime.now(UTC) + timedelta(hours=2)
    anchor = (later + timedelta(minutes=30)).replace(microsecond=0)
    jobs: list[tuple[str, dict[str, str]]] = []
    for i in range(count):
        if i % 2:
            minute = (later.minute + i % 30) % 60
            jobs.append((f"cron{i:05d}", {"cron": f"{minute} {later.hour} * * *"}))
        else:
            start = anchor.strftime("%Y-%m-%dT%H:%M:%SZ")
            jobs.append((f"every{i:05d}", {"every": "1d", "anchor": start}))
    return jobs


def measure(kind: str, count: int, seconds: float, keep: bool) -> None:
    with scratch(f"idle-{kind}", keep) as directory, bench_store(kind, directory) as target:
        config = directory / "schedules.toml"
        config.write_text(toml_jobs(quiet_jobs(count)))
        with Processes(directory / "logs", show_logs=False) as procs:
            daemon = procs.run(config, target.url)
            daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
            time.sleep(2.0)  # let the start-up settle (first sleep computed, imports done)
            server = target.server.process.pid if target.server and target.server.process else None
            cpu0, switches0 = cpu_seconds(daemon.pid), context_switches(daemon.pid)
            server0 = cpu_seconds(server) if server else 0.0
            began = time.monotonic()
            time.sleep(seconds)  # the measuring window itself
            elapsed = time.monotonic() - began
            cpu = cpu_seconds(daemon.pid) - cpu0
            switches = context_switches(daemon.pid) - switches0
            server_cpu = (cpu_seconds(server) - server0) if server else None
            dispatched = daemon.find(r"^dispatched ")
            daemon.term()
            daemon.wait_exit(timeout=STARTUP)
    extra = "" if server_cpu is None else f"; redis-server {server_cpu:.3f} s"
    print(
        f"{kind:6} leader, {count} jobs, {elapsed:.0f} s idle: CPU {cpu:.3f} s "
        f"({cpu / elapsed * 100:.2f} % of a core), {switches / elapsed:.1f} thread wake-ups/s"
        f"{extra}; dispatched {len(dispatched)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=STORE_CHOICES, default="both")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args(argv)
    kinds = store_kinds(args.store)
    print(f"idle cost; {machine()}")
    for kind in kinds:
        measure(kind, args.jobs, args.seconds, args.keep)
    print(f"\n{reproduce('bench_idle', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
