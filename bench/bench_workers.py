"""Workers, through the whole path (real processes): start lateness with an idle pool, throughput.

``lateness``: slot instant → the job's own first instruction, with an idle pool of 2
(``chronod worker --concurrency 2`` next to a ``chronod run --workers 0`` scheduler). Eight jobs
due every second at staggered instants (``anchor`` .000, .125, … .875 s), so each slot finds both
worker processes idle: ``call`` jobs (:func:`tests.procs.record_run`, which writes ``time.time()``
on entry) and ``command`` jobs (``/bin/sh -c 'echo … $(date +%s.%N)'``, so the figure includes
starting a shell and ``date``). The first seconds are a warm-up and are not counted. The store's
history splits each run's lateness: dispatch (``created_at`` − slot), claim (``started_at`` −
``created_at``) and start (the job's clock − ``started_at``); one host, so one clock.

``throughput``: N one-slot jobs whose slot lies in the past and whose state is seeded with an
earlier watermark, so the leader dispatches all N the moment it loads (one catch-up batch) to a
pool of 2 that drains the queue. Runs per second = N / (last ``finished_at`` − first
``created_at``), i.e. dispatch → claim → execute → finish, for a trivial ``command`` (``true``)
and a trivial ``call`` (``os:getpid``).

    .venv/bin/python -m bench.bench_workers lateness [--store KIND] [--seconds 20]
    .venv/bin/python -m bench.bench_workers throughput [--store KIND] [--runs 500]
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# Only what a worker process has imported anyway: a ``call`` job imports this module in every run
# (for :func:`record`), and its import time would count as start lateness. Everything else is
# imported where it is used.
if TYPE_CHECKING:
    from bench.benchlib import BenchStore
    from chronod.store.base import RunRecord, Store
    from tests.procs import ChronodProcess, Processes

STARTUP = 120.0
POOL = 2  # worker processes
# A ``call`` job imports its module in every run (a fresh fork each time): let it use a .pyc like
# any deployment does, even where the caller's environment says PYTHONDONTWRITEBYTECODE.
ENV = {"PYTHONDONTWRITEBYTECODE": ""}
WARMUP = 3.0  # seconds of slots not counted (first imports, first connections)
RECORDER = "bench.bench_workers:record"


def record(path: str) -> None:
    """The ``call`` job body: append ``RUN_ID TIME`` (``time.time()`` on entry) to ``path`` in one
    ``write`` (``O_APPEND``: concurrent runs' lines never interleave)."""
    now = time.time()
    line = f"{os.environ.get('CHRONOD_RUN_ID', '-')} {now:.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# -- config and processes -------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def config_text(jobs: Mapping[str, Mapping[str, Any]], lease: str = "10s") -> str:
    """A schedules.toml: ``[chronod] lease``, UTC and ``overlap = "allow"`` defaults, the jobs."""
    lines = ["[chronod]", f"lease = {toml_value(lease)}", ""]
    lines += ["[defaults]", 'timezone = "UTC"', 'overlap = "allow"', 'grace = "60s"']
    for name, body in jobs.items():
        lines += ["", f"[jobs.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


def start_pool(procs: Processes, config: Path, target: BenchStore) -> ChronodProcess:
    """``chronod worker --concurrency 2``, once both processes are up."""
    from tests.procs import wait_until

    pool = procs.worker(config, target.url, concurrency=POOL, name="pool")
    wait_until(
        lambda: len(pool.find(r"^worker started")) >= POOL,
        timeout=STARTUP,
        what="the pool's processes",
        context=pool.tail,
    )
    return pool


def stop(*processes: ChronodProcess) -> None:
    for process in processes:
        process.term()
    for process in processes:
        process.wait_exit(timeout=STARTUP)


def slot_of(run_id: str) -> datetime:
    """The slot of a scheduled run id (``NAME@2026-11-27T14:30:00.125000Z``)."""
    return datetime.fromisoformat(run_id.rpartition("@")[2].replace("Z", "+00:00"))


def recorded(path: Path) -> dict[str, float]:
    """``RUN_ID … TIME`` lines (the last word is the job's clock) → {run id: time}."""
    found: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2:
                found[words[0]] = float(words[-1])
    return found


def histories(store: Store, jobs: Iterable[str]) -> dict[str, RunRecord]:
    return {h.run_id: h for job in jobs for h in store.history(job, 10_000)}


def service_split(
    runs: Iterable[RunRecord], entered: Mapping[str, float] | None = None
) -> dict[str, list[float]]:
    """Where a worker process spends each run, from the store's history (store time = host time).

    Per worker process, runs in claim order: ``claim→entry`` (fork, the child's set-up, the job's
    first instruction; needs ``entered``, the job's own clock by run id), ``entry→finish`` (the job,
    its exit, the worker noticing it, recording the result), ``finish→claim`` (from one recorded
    result to the next claim: logging, registration, the claim round trip) and ``claim→finish``
    (the whole attempt, when ``entered`` is not known).
    """
    split: dict[str, list[float]] = {
        "claim→entry": [],
        "entry→finish": [],
        "claim→finish": [],
        "finish→claim": [],
    }
    by_worker: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.started_at is not None and run.finished_at is not None and run.worker:
            by_worker.setdefault(run.worker, []).append(run)
    for mine in by_worker.values():
        mine.sort(key=lambda r: r.started_at or r.created_at)
        previous: RunRecord | None = None
        for run in mine:
            assert run.started_at is not None
            assert run.finished_at is not None
            claimed, finished = run.started_at.timestamp(), run.finished_at.timestamp()
            split["claim→finish"].append(finished - claimed)
            if entered is not None and run.run_id in entered:
                split["claim→entry"].append(entered[run.run_id] - claimed)
                split["entry→finish"].append(finished - entered[run.run_id])
            if previous is not None and previous.finished_at is not None:
                # Only back-to-back runs: a worker that waited for work is not spending time.
                gap = claimed - previous.finished_at.timestamp()
                if run.created_at <= previous.finished_at:
                    split["finish→claim"].append(gap)
            previous = run
    return split


def split_text(split: Mapping[str, Sequence[float]]) -> str:
    """``name median`` for each non-empty part of a :func:`service_split`."""
    return ", ".join(f"{name} {ms(values).strip()}" for name, values in split.items() if values)


def seed(store: Store, config: Path, watermark: datetime) -> None:
    """Job state with ``watermark``: the next leader dispatches every later slot at once."""
    from chronod.config import load_config
    from chronod.store.base import JobSync

    jobs = load_config(config).jobs
    lease = store.acquire_lease("bench-seeder", "bench-seeder", timedelta(seconds=30))
    if lease is None:
        raise SystemExit("the store already has a leader")
    store.sync_jobs(
        lease,
        [
            JobSync(
                name=j.name, fingerprint=j.fingerprint, next_due=j.schedule.next_after(watermark)
            )
            for j in jobs.values()
        ],
        watermark,
    )
    store.release_lease(lease)


def ms(values: Sequence[float]) -> str:
    import statistics

    return f"{statistics.median(values) * 1000:6.1f} ms" if values else "     -"


# -- lateness -------------------------------------------------------------------------------------


class Lateness(NamedTuple):
    kind: str  # "call" or "command"
    total: list[float]
    dispatch: list[float]
    claim: list[float]
    start: list[float]


def lateness(store_kind: str, seconds: float, keep: bool) -> list[Lateness]:
    import shlex

    from bench.benchlib import bench_store, scratch
    from chronod.tz import UTC
    from tests.procs import Processes, wait_until

    with (
        scratch(f"lateness-{store_kind}", keep) as directory,
        bench_store(store_kind, directory) as target,
    ):
        outputs = {"call": directory / "call.txt", "command": directory / "command.txt"}
        jobs: dict[str, dict[str, Any]] = {}
        for i in range(4):
            jobs[f"call{i}"] = {
                "every": "1s",
                "anchor": f"1970-01-01T00:00:00.{250 * i:03d}Z",
                "call": RECORDER,
                "args": [str(outputs["call"])],
            }
            echo = (
                f'echo "$CHRONOD_RUN_ID $(date +%s.%N)" >> {shlex.quote(str(outputs["command"]))}'
            )
            jobs[f"command{i}"] = {
                "every": "1s",
                "anchor": f"1970-01-01T00:00:00.{250 * i + 125:03d}Z",
                "command": echo,
            }
        config = directory / "schedules.toml"
        config.write_text(config_text(jobs))
        with Processes(directory / "logs", env=ENV, show_logs=False) as procs:
            pool = start_pool(procs, config, target)
            daemon = procs.run(config, target.url, name="scheduler")
            daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
            begin = datetime.now(UTC) + timedelta(seconds=WARMUP)
            end = begin + timedelta(seconds=seconds)
            # The window is the scenario: wait it out on the wall clock, without polling the store.
            time.sleep(max((end - datetime.now(UTC)).total_seconds() + 1.0, 0.0))
            stop(daemon)
            store = target.open()
            try:
                wait_until(
                    lambda: store.live_runs() == [], timeout=STARTUP, what="the last runs to end"
                )
                runs = histories(store, jobs)
            finally:
                store.close()
            stop(pool)
        results = []
        for kind, path in outputs.items():
            times = {r: t for r, t in recorded(path).items() if begin <= slot_of(r) < end}
            result = Lateness(kind, [], [], [], [])
            for run_id, at in times.items():
                slot = slot_of(run_id).timestamp()
                result.total.append(at - slot)
                run = runs.get(run_id)
                if run is not None and run.started_at is not None:
                    result.dispatch.append(run.created_at.timestamp() - slot)
                    result.claim.append((run.started_at - run.created_at).total_seconds())
                    result.start.append(at - run.started_at.timestamp())
            expected = int(seconds) * 4
            if len(result.total) < expected - 4:
                raise SystemExit(f"{store_kind}/{kind}: {len(result.total)} runs, {expected} due")
            results.append(result)
        return results


# -- throughput -----------------------------------------------------------------------------------


class Throughput(NamedTuple):
    kind: str
    runs: int
    seconds: float  # first dispatch → last finish
    execute_seconds: float  # first claim → last finish
    split: dict[str, list[float]]  # service_split of the runs


def throughput(store_kind: str, kind: str, count: int, keep: bool) -> Throughput:
    from bench.benchlib import bench_store, scratch
    from chronod.instants import format_utc
    from chronod.tz import UTC
    from tests.procs import Processes, wait_until

    with (
        scratch(f"throughput-{store_kind}", keep) as directory,
        bench_store(store_kind, directory) as target,
    ):
        slot = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
        body: dict[str, Any] = {"every": "1s", "start": format_utc(slot), "end": format_utc(slot)}
        body |= {"command": "true"} if kind == "command" else {"call": "os:getpid"}
        names = [f"t{i:05d}" for i in range(count)]
        config = directory / "schedules.toml"
        config.write_text(config_text(dict.fromkeys(names, body)))
        store = target.open()
        try:
            seed(store, config, slot - timedelta(seconds=1))
            with Processes(directory / "logs", env=ENV, show_logs=False) as procs:
                pool = start_pool(procs, config, target)
                daemon = procs.run(config, target.url, name="scheduler")
                wait_until(
                    lambda: len(pool.find(r"^finished$")) >= count,
                    timeout=STARTUP + count,
                    what=f"{count} runs to finish",
                    interval=0.2,
                    context=pool.tail,
                )
                stop(daemon, pool)
            runs = list(histories(store, names).values())
        finally:
            store.close()
        if len(runs) != count or any(r.state.value != "succeeded" for r in runs):
            raise SystemExit(
                f"{store_kind}/{kind}: {len(runs)} runs recorded, not {count} successes"
            )
        first_created = min(r.created_at for r in runs)
        first_started = min(r.started_at for r in runs if r.started_at is not None)
        last_finished = max(r.finished_at for r in runs if r.finished_at is not None)
        return Throughput(
            kind,
            count,
            (last_finished - first_created).total_seconds(),
            (last_finished - first_started).total_seconds(),
            service_split(runs),
        )


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.benchlib import STORE_CHOICES, machine, reproduce, store_kinds, summary_ms

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=["lateness", "throughput", "all"])
    parser.add_argument("--store", choices=STORE_CHOICES, default="both")
    parser.add_argument("--seconds", type=float, default=20.0, help="lateness: measured window")
    parser.add_argument("--runs", type=int, default=500, help="throughput: runs per figure")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories (logs)")
    args = parser.parse_args(argv)
    kinds = store_kinds(args.store)
    print(f"workers: pool of {POOL} processes; {machine()}")
    if args.what in ("lateness", "all"):
        print(
            f"\nstart lateness: slot → the job's first instruction, idle pool, {args.seconds:g} s"
        )
        for store_kind in kinds:
            for result in lateness(store_kind, args.seconds, args.keep):
                print(f"  {store_kind:6} {result.kind:7}  {summary_ms(result.total)}")
                print(
                    f"  {'':6} {'':7}  median split: dispatch {ms(result.dispatch)}, "
                    f"claim {ms(result.claim)}, start {ms(result.start)}"
                )
    if args.what in ("throughput", "all"):
        print(f"\nthroughput: {args.runs} runs dispatched at once, dispatch → finish")
        for store_kind in kinds:
            for kind in ("command", "call"):
                rate = throughput(store_kind, kind, args.runs, args.keep)
                print(
                    f"  {store_kind:6} {kind:7}  {rate.runs / rate.seconds:7.1f} runs/s "
                    f"({rate.runs} in {rate.seconds:.2f} s; claim → finish "
                    f"{rate.runs / rate.execute_seconds:.1f} runs/s)"
                )
                print(f"  {'':6} {'':7}  per worker process, median: {split_text(rate.split)}")
    print(f"\n{reproduce('bench_workers', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
