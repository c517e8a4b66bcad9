"""Burst: N trivial jobs due at the same minute, 2 worker processes, Redis; chronod vs Celery.

Both systems run in the same invocation, one after the other, on one private ``redis-server``
(chronod in database 0, Celery's broker in database 1), each with 2 worker processes:

chronod
    ``chronod run --workers 0`` (the scheduler) and ``chronod worker --concurrency 2``; N jobs
    ``cron = "* * * * *"`` (bounded by ``start`` to one chosen minute, so no earlier minute loads
    the pool), each a ``call`` of :func:`bench.bench_workers.record`, which appends the run id and
    ``time.time()`` on entry.
Celery
    ``celery beat`` and ``celery worker -c 2`` (prefork, defaults otherwise) on this module's
    :data:`app`: N beat entries ``crontab(minute='*')`` of one task that appends its name and
    ``time.time()`` on entry. Beat fires at the first minute boundary after it started.

Start lateness = the job's clock on entry − the minute boundary (chronod: the slot in its run id).
The reference for Celery on this machine class is p50 2.7 s, p99 5.2 s; chronod must be at least
twice as fast. chronod's lateness is split from its store's history: dispatch (``created_at`` −
slot), queue (``started_at`` − ``created_at``: waiting for a free worker, then the claim) and start
(the job's clock − ``started_at``: fork and the job's first instruction).

Celery is a benchmark-only dependency: ``.venv/bin/pip install -e '.[bench]'`` (or
``.venv/bin/pip install celery``).

    .venv/bin/python -m bench.bench_celery [--jobs 1000] [--only chronod|celery] [--keep]
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from bench.benchlib import BenchStore
    from chronod.store.base import RunRecord
    from tests.procs import Processes

# The Celery side reads its settings from the environment: the benchmark starts ``celery`` with
# these set, and ``celery -A bench.bench_celery`` imports this module to find :data:`app`.
BROKER = "CHRONOD_BENCH_BROKER"
OUTPUT = "CHRONOD_BENCH_OUTPUT"
TASKS = "CHRONOD_BENCH_TASKS"
TASK = "bench.record"
REFERENCE = {"p50": 2.7, "p99": 5.2}  # seconds: Celery as measured on this machine class
STARTUP = 120.0
MARGIN = 20.0  # seconds: processes start at least this long before the measured minute
POOL = 2


def record(name: str) -> None:
    """The Celery task body: append ``NAME TIME`` (``time.time()`` on entry) to the output file."""
    now = time.time()
    fd = os.open(os.environ[OUTPUT], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name} {now:.6f}\n".encode())
    finally:
        os.close(fd)


def make_app(broker: str, tasks: int) -> Any:
    """The Celery app: one task, ``tasks`` beat entries firing every minute."""
    celery: Any = importlib.import_module("celery")
    crontab: Any = importlib.import_module("celery.schedules").crontab
    application = celery.Celery("chronod_bench", broker=broker)
    application.conf.update(
        timezone="UTC",
        enable_utc=True,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            f"c{i:05d}": {"task": TASK, "schedule": crontab(minute="*"), "args": (f"c{i:05d}",)}
            for i in range(tasks)
        },
    )
    application.task(name=TASK)(record)
    return application


app: Any = make_app(os.environ[BROKER], int(os.environ[TASKS])) if BROKER in os.environ else None


# -- measuring ------------------------------------------------------------------------------------


def next_minute(after: float) -> float:
    """The first whole minute (Unix time) at or after ``after``."""
    return float(math.ceil(after / 60) * 60)


def recorded(path: Path) -> dict[str, float]:
    """``NAME … TIME`` lines → {name: time of its first line}."""
    found: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2:
                found.setdefault(words[0], float(words[-1]))
    return found


def wait_for_lines(path: Path, count: int, deadline: float, what: str) -> dict[str, float]:
    from tests.procs import wait_until

    def enough() -> dict[str, float] | None:
        found = recorded(path)
        return found if len(found) >= count else None

    return wait_until(enough, timeout=max(deadline - time.time(), 1.0), what=what, interval=0.2)


class ChronodBurst(NamedTuple):
    lateness: list[float]  # seconds, per run
    split: dict[str, list[float]]  # dispatch, queue, start (seconds, per run)
    service: dict[str, list[float]]  # bench.bench_workers.service_split
    cpu: dict[str, float]  # CPU seconds per run, by process role, over the burst


def cpu_of(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds (user + system) of ``pid``, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def cpu_by_role(scheduler: int, pool: int, redis_server: int) -> dict[str, float]:
    """CPU seconds so far of each process role of the chronod side."""
    from tests.procs import child_pids

    children = child_pids(pool)
    workers = [cpu_of(pid) for pid in children]
    # Each worker's fork server, which reaps the runs (an idle spare is not counted yet).
    servers = [cpu_of(server) for worker in children for server in child_pids(worker)]
    return {
        "scheduler": cpu_of(scheduler)[0],
        "worker processes": sum(own for own, _ in workers),
        "fork servers": sum(own for own, _ in servers),
        "run processes": sum(reaped for _, reaped in (*workers, *servers)),
        "pool supervisor": cpu_of(pool)[0],
        "redis-server": cpu_of(redis_server)[0],
    }


def chronod_burst(procs: Processes, target: BenchStore, directory: Path, jobs: int) -> ChronodBurst:
    """chronod: lateness per run, where it goes, and what it costs."""
    from datetime import datetime

    from bench.bench_workers import ENV, config_text, service_split, stop
    from chronod.instants import format_utc
    from chronod.tz import UTC

    assert target.server is not None
    assert target.server.process is not None
    output = directory / "chronod.txt"
    minute = next_minute(time.time() + MARGIN)
    start = format_utc(datetime.fromtimestamp(minute, UTC))
    body = {
        "cron": "* * * * *",
        "start": start,
        "call": "bench.bench_workers:record",
        "args": [str(output)],
    }
    names = [f"b{i:05d}" for i in range(jobs)]
    config = directory / "schedules.toml"
    config.write_text(config_text(dict.fromkeys(names, body)))
    pool = procs.worker(config, target.url, concurrency=POOL, name="chronod-pool", env=ENV)
    daemon = procs.run(config, target.url, name="chronod-scheduler", env=ENV)
    daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    if time.time() > minute - 2:
        raise SystemExit("chronod took too long to start: the measured minute has begun")
    print(f"  chronod ready; {jobs} runs due at {start}")
    roles = (daemon.pid, pool.pid, target.server.process.pid)
    time.sleep(max(minute - 1 - time.time(), 0.0))  # the burst is the scenario: wait for it
    before = cpu_by_role(*roles)
    times = wait_for_lines(output, jobs, minute + STARTUP, f"{jobs} chronod runs")
    after = cpu_by_role(*roles)
    stop(daemon)
    store = target.open()
    try:
        runs: dict[str, RunRecord] = {h.run_id: h for n in names for h in store.history(n, 10)}
    finally:
        store.close()
    stop(pool)
    split: dict[str, list[float]] = {"dispatch": [], "queue": [], "start": []}
    lateness = []
    for run_id, at in times.items():
        lateness.append(at - minute)
        run = runs.get(run_id)
        if run is not None and run.started_at is not None:
            split["dispatch"].append(run.created_at.timestamp() - minute)
            split["queue"].append((run.started_at - run.created_at).total_seconds())
            split["start"].append(at - run.started_at.timestamp())
    cpu = {role: (after[role] - before[role]) / len(times) for role in after}
    return ChronodBurst(lateness, split, service_split(runs.values(), times), cpu)


def celery_burst(procs: Processes, target: BenchStore, directory: Path, jobs: int) -> list[float]:
    """Celery beat + ``celery worker -c 2``: lateness per task."""
    from tests.procs import wait_until

    assert target.server is not None
    output = directory / "celery.txt"
    env = {BROKER: f"redis://127.0.0.1:{target.server.port}/1", OUTPUT: str(output)}
    env |= {TASKS: str(jobs)}
    celery = [sys.executable, "-m", "celery", "-A", "bench.bench_celery:app"]
    # Start well before a minute boundary, so beat is up and waiting when it comes.
    if next_minute(time.time()) - time.time() < MARGIN:
        time.sleep(next_minute(time.time()) - time.time() + 0.5)
    worker = procs.command(
        "celery-worker",
        [*celery, "worker", "-c", str(POOL), "--loglevel", "INFO", "-n", "bench@%h"],
        env=env,
    )
    beat = procs.command(
        "celery-beat",
        [
            *celery,
            "beat",
            "--loglevel",
            "DEBUG",
            "--schedule",
            str(directory / "beat-schedule"),
            "--pidfile",
            str(directory / "beat.pid"),
        ],
        env=env,
    )
    minute = next_minute(time.time())
    worker.wait_for_log(r"ready\.", timeout=STARTUP)
    wait_until(
        lambda: "Waking up" in beat.log_path.read_text(errors="replace"),
        timeout=STARTUP,
        what="celery beat to wait for its first due entries",
        context=beat.tail,
    )
    if time.time() > minute - 1:
        raise SystemExit("celery took too long to start: the measured minute has begun")
    print(f"  celery ready; {jobs} tasks due at the next minute")
    times = wait_for_lines(output, jobs, minute + STARTUP, f"{jobs} celery tasks")
    for process in (beat, worker):
        process.term()
    for process in (beat, worker):
        process.wait_exit(timeout=STARTUP)
    return [at - minute for at in times.values()]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import statistics

    from bench.bench_workers import split_text
    from bench.benchlib import bench_store, machine, percentile, reproduce, scratch, summary_ms
    from tests.procs import Processes

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--only", choices=["chronod", "celery"], default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = parser.parse_args(argv)
    if args.only != "chronod":
        try:
            importlib.import_module("celery")
        except ImportError:
            raise SystemExit(
                "celery is not installed: .venv/bin/pip install -e '.[bench]'"
            ) from None
    print(f"burst: {args.jobs} jobs due at one minute, {POOL} worker processes, Redis; {machine()}")
    results: dict[str, list[float]] = {}
    with (
        scratch("burst", args.keep) as directory,
        bench_store("redis", directory) as target,
        Processes(directory / "logs", show_logs=False) as procs,
    ):
        if args.only != "celery":
            burst = chronod_burst(procs, target, directory, args.jobs)
            results["chronod"] = burst.lateness
            print(f"  chronod  {summary_ms(burst.lateness)}")
            print(f"           median split: {split_text(burst.split)}")
            print(f"           per worker process, median: {split_text(burst.service)}")
            cpu = ", ".join(f"{role} {value * 1000:.2f} ms" for role, value in burst.cpu.items())
            print(f"           CPU per run: {cpu} (total {sum(burst.cpu.values()) * 1000:.1f} ms)")
            service = burst.service
            spent = statistics.median(service["claim→finish"]) + statistics.median(
                service["finish→claim"]
            )
            print(
                f"           → {spent * 1000:.1f} ms per run per worker process: at most "
                f"{POOL / spent:.0f} runs/s with {POOL}, {args.jobs * spent / POOL:.1f} s for "
                f"{args.jobs}"
            )
        if args.only != "chronod":
            results["celery"] = celery_burst(procs, target, directory, args.jobs)
            print(f"  celery   {summary_ms(results['celery'])}")
    print()
    figures = {
        k: {q: percentile(v, int(q[1:])) for q in ("p50", "p99")} for k, v in results.items()
    }
    for name, values in figures.items():
        print(f"{name:8} p50 {values['p50']:7.3f} s   p99 {values['p99']:7.3f} s")
    print(
        f"{'celery*':8} p50 {REFERENCE['p50']:7.3f} s   p99 {REFERENCE['p99']:7.3f} s"
        "   (* the reference figures)"
    )
    if "chronod" in figures:
        ours = figures["chronod"]
        theirs = figures.get("celery", REFERENCE)
        source = "measured" if "celery" in figures else "reference"
        ratios = {q: theirs[q] / ours[q] if ours[q] > 0 else float("inf") for q in ("p50", "p99")}
        verdict = "ok" if min(ratios.values()) >= 2 else "MISSED the 2x target"
        print(
            f"celery ({source}) / chronod: p50 {ratios['p50']:.1f}x, p99 {ratios['p99']:.1f}x "
            f"-> {verdict}"
        )
    print(f"\n{reproduce('bench_celery', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
