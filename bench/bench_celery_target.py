"""Celery beat vs chronod → Celery, on the same Celery workers: a burst, and duplicates.

One private ``redis-server`` (chronod's store in database 0, Celery's broker in database 1) and one
``celery worker -c 2`` on :data:`bench.bench_celery.app`, whose task appends its name and
``time.time()`` on entry, serve every phase:

burst
    N tasks due in the same minute, sent by chronod (``chronod run --workers 2``, N ``celery``
    jobs with one slot each) and then by ``celery beat`` (N ``crontab(minute='*')`` entries).
    Start lateness = the task's clock on entry − the minute boundary.
duplicates
    The same with two schedulers at once for one minute: two ``celery beat`` processes, then two
    ``chronod run`` daemons on the shared store; each counts task executions beyond one per task.

Celery is a dev/bench dependency (``pip install -e '.[bench]'``).

    .venv/bin/python -m bench.bench_celery_target [--jobs 1000] [--duplicates 100] [--keep]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.bench_celery import BROKER, MARGIN, OUTPUT, STARTUP, TASK, TASKS, next_minute

if TYPE_CHECKING:
    from tests.procs import ChronodProcess, Processes

CELERY = (sys.executable, "-m", "celery", "-A", "bench.bench_celery:app")


def lines_in(path: Path, minute: float) -> list[str]:
    """Names of the executions recorded for the minute starting at ``minute`` (Unix time)."""
    if not path.exists():
        return []
    names = []
    for line in path.read_text().splitlines():
        name, at = line.split()
        if minute <= float(at) < minute + 60:
            names.append(name)
    return names


def wait_for(path: Path, minute: float, count: int) -> None:
    from tests.procs import wait_until

    wait_until(
        lambda: len(set(lines_in(path, minute))) >= count,
        timeout=STARTUP + 60,
        what=f"{count} executions",
        interval=0.2,
    )


def settle_before(minute: float) -> None:
    if time.time() > minute - 1:
        raise SystemExit("the schedulers took too long to start: the measured minute has begun")
    time.sleep(max(minute - time.time(), 0.0))  # the burst is the scenario: wait for it


def chronod_config(directory: Path, broker: str, jobs: int, minute: float) -> Path:
    from bench.bench_workers import config_text
    from chronod.instants import format_utc
    from chronod.tz import UTC

    at = format_utc(datetime.fromtimestamp(minute, UTC))
    bodies = {
        f"r{i:05d}": {
            "cron": "* * * * *",
            "start": at,
            "end": at,
            "celery": TASK,
            "args": [f"r{i:05d}"],
        }
        for i in range(jobs)
    }
    text = config_text(bodies, lease="2s").replace(
        "\n\n[defaults]", f'\n\n[chronod.celery]\nbroker = "{broker}"\n\n[defaults]', 1
    )
    path = directory / f"schedules-{int(minute)}.toml"
    path.write_text(text)
    return path


def chronod_phase(
    procs: Processes, store: str, broker: str, directory: Path, jobs: int, daemons: int
) -> float:
    """``daemons`` ``chronod run --workers 2`` for N one-slot jobs; the measured minute."""
    minute = next_minute(time.time() + MARGIN)
    config = chronod_config(directory, broker, jobs, minute)
    started = [procs.run(config, store, workers=2, name=f"chronod-{k}") for k in range(daemons)]
    started[0].wait_for_log(r"^leading: jobs loaded|became leader", timeout=STARTUP)
    for daemon in started:
        daemon.wait_for_log(r"^worker started", timeout=STARTUP)
    settle_before(minute)
    return minute


def beat_phase(procs: Processes, env: dict[str, str], directory: Path, beats: int) -> float:
    from tests.procs import wait_until

    if next_minute(time.time()) - time.time() < MARGIN:
        time.sleep(next_minute(time.time()) - time.time() + 0.5)
    minute = next_minute(time.time())
    started: list[ChronodProcess] = []
    for k in range(beats):
        schedule = directory / f"beat-{int(minute)}-{k}"
        started.append(
            procs.command(
                f"beat-{k}",
                [
                    *CELERY,
                    "beat",
                    "--loglevel",
                    "DEBUG",
                    "--schedule",
                    str(schedule),
                    "--pidfile",
                    str(schedule) + ".pid",
                ],
                env=env,
            )
        )
    for beat in started:
        log = beat.log_path
        wait_until(
            lambda log=log: "Waking up" in log.read_text(errors="replace"),  # type: ignore[misc]
            timeout=STARTUP,
            what="celery beat to wait for its first due entries",
        )
    settle_before(minute)
    return minute


def stop_schedulers(procs: Processes) -> None:
    """Every process but the Celery worker (the first started), stopped and reaped."""
    running = [p for p in procs.started[1:] if p.alive()]
    for process in running:
        process.term()
    for process in running:
        process.wait_exit(timeout=STARTUP)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.benchlib import bench_store, machine, percentile, reproduce, scratch
    from tests.procs import Processes

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--duplicates", type=int, default=100, help="tasks in the duplicate runs")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args(argv)
    print(f"celery target: {args.jobs} tasks in one minute, celery worker -c 2, Redis; {machine()}")
    with (
        scratch("celery-target", args.keep) as directory,
        bench_store("redis", directory) as target,
        Processes(directory / "logs", show_logs=False) as procs,
    ):
        assert target.server is not None
        broker = f"redis://127.0.0.1:{target.server.port}/1"
        output = directory / "executions.txt"
        env = {BROKER: broker, OUTPUT: str(output), TASKS: str(args.jobs)}
        worker = procs.command(
            "celery-worker",
            [*CELERY, "worker", "-c", "2", "--loglevel", "INFO", "-n", "b@%h"],
            env=env,
        )
        worker.wait_for_log(r"ready\.", timeout=STARTUP)
        late: dict[str, list[float]] = {}
        counts: dict[str, int] = {}

        def lateness(minute: float) -> list[float]:
            first: dict[str, float] = {}
            for line in output.read_text().splitlines():
                name, at = line.split()
                if minute <= float(at) < minute + 60:
                    first.setdefault(name, float(at) - minute)
            return list(first.values())

        minute = chronod_phase(procs, target.url, broker, directory, args.jobs, daemons=1)
        wait_for(output, minute, args.jobs)
        late["chronod → celery"] = lateness(minute)
        stop_schedulers(procs)
        minute = beat_phase(procs, env, directory, beats=1)
        wait_for(output, minute, args.jobs)
        late["celery beat"] = lateness(minute)
        stop_schedulers(procs)
        small = env | {TASKS: str(args.duplicates)}
        minute = beat_phase(procs, small, directory, beats=2)
        wait_for(output, minute, args.duplicates)
        time.sleep(5)  # later duplicates: the count is the point
        counts["two celery beats"] = sum(n - 1 for n in Counter(lines_in(output, minute)).values())
        stop_schedulers(procs)
        minute = chronod_phase(procs, target.url, broker, directory, args.duplicates, daemons=2)
        wait_for(output, minute, args.duplicates)
        time.sleep(5)
        counts["two chronod daemons"] = sum(
            n - 1 for n in Counter(lines_in(output, minute)).values()
        )
    print()
    for name, values in late.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"{name:18} start lateness p50 {p50:7.3f} s   p99 {p99:7.3f} s   (n={len(values)})")
    for name, count in counts.items():
        print(f"{name:18} duplicate executions: {count} of {args.duplicates} tasks")
    print(f"\n{reproduce('bench_celery_target', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
