"""Scale: a real ``chronod run`` daemon with 100,000 jobs, each firing every minute.

Two workloads, run one after the other by default (``--case``), each with its own verdict:

``all-at-once`` (the worst case)
    The jobs mix the kinds: ``every = "1m"`` intervals (40%), five-field crons (``* * * * *``, 40%)
    in four time zones, and windowed crons (``*/1 * * * *`` with ``start``/``end``, 20%). All of
    them fire at second 0 of every minute: 100,000 slots due at the same instant.
``spread`` (a realistic shape)
    The same number of jobs, each still firing every minute (the same 100,000 slots a minute),
    shaped the way a large installation is: the crons cluster at second 0 (cron's resolution is
    the minute; 10% crons in four zones, 10% windowed crons), and the intervals (80%) - what one
    picks for per-minute work - have anchors spread evenly over the minute (millisecond phases).
    That is 20,000 slots at second 0 and about 1,333 a second the rest of the minute.

Figures: start-up (process start → config loaded → lease → job state synced, from the daemon's
log), RSS after start-up and at peak, and for the three whole minutes after start-up: whether every
slot was dispatched exactly once, and the lateness (store time of the dispatch decision − slot)
p50 / p99 / max per minute. Runs are read back from the store directly (one SQL query; Redis
pipelines), since 300,000 live runs are more than a status command is meant to list.

    .venv/bin/python -m bench.bench_scale [--store sqlite|redis|postgres|both|all] [--jobs 100000]
        [--minutes 3] [--case all|spread|both] [--source DIR]

(``--spread`` is short for ``--case spread``.)
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from bench.benchlib import (
    STORE_CHOICES,
    BenchStore,
    bench_store,
    machine,
    percentile,
    reproduce,
    rss_mib,
    scratch,
    store_kinds,
    summary_ms,
    toml_jobs,
)
from chronod.instants import from_micros
from chronod.store.keys import KeySpace
from chronod.tz import UTC
from tests.procs import REPO, ChronodProcess, LogEntry, Processes

ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata")
MINUTE = timedelta(minutes=1)
STARTUP = 900.0


CASES = ("all", "spread")
LABELS = {"all": "all-at-once (worst case)", "spread": "spread (realistic)"}
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def jobs_config(count: int, spread: bool) -> str:
    """The schedules.toml of a case: see the module docstring."""
    share = (8, 1) if spread else (4, 4)  # tenths that are intervals, crons; the rest windowed
    intervals = count * share[0] // 10
    crons = intervals + count * share[1] // 10
    jobs: list[tuple[str, dict[str, str]]] = []
    for i in range(count):
        if i < intervals:
            body = {"every": "1m"}
            if spread:  # phases evenly over the minute, to the millisecond
                phase = timedelta(milliseconds=i * 60_000 // intervals)
                body["anchor"] = (ANCHOR + phase).isoformat(timespec="milliseconds")
            jobs.append((f"i{i:06d}", body))
        elif i < crons:
            jobs.append((f"c{i:06d}", {"cron": "* * * * *", "timezone": ZONES[i % len(ZONES)]}))
        else:
            window = {"start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}
            jobs.append((f"w{i:06d}", {"cron": "*/1 * * * *", **window}))
    return toml_jobs(jobs, overlap="allow")


def read_runs(target: BenchStore) -> list[tuple[str, datetime, datetime]]:
    """(job, slot, decided at) of every live run, read straight from the store."""
    if target.server is None:
        path = target.url[len("sqlite://") :]
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT job, slot, created_at FROM runs").fetchall()
        finally:
            conn.close()
        return [(job, from_micros(slot), from_micros(at)) for job, slot, at in rows]
    keys = KeySpace("chronod")
    client = target.server.client()
    ids = [bytes(x).decode() for x in cast(list[bytes], client.zrange(keys.live, 0, -1))]
    found: list[tuple[str, datetime, datetime]] = []
    for start in range(0, len(ids), 10_000):
        pipe = client.pipeline(transaction=False)
        for run_id in ids[start : start + 10_000]:
            pipe.hmget(keys.run(run_id), "job", "slot", "created_at")
        for job, slot, at in pipe.execute():
            found.append((job.decode(), from_micros(int(slot)), from_micros(int(at))))
    return found


def window_runs(
    runs: list[tuple[str, datetime, datetime]], first: datetime, end: datetime
) -> list[tuple[str, datetime, datetime]]:
    return [(job, slot, at) for job, slot, at in runs if first <= slot < end]


def phase(entry: LogEntry, spawned: float) -> float:
    assert entry.ts is not None
    return entry.ts.timestamp() - spawned


def measure(
    kind: str, case: str, count: int, minutes: int, keep: bool, source: str | None
) -> tuple[bool, str]:
    """Run one case on one store; returns (passed, verdict line)."""
    spread = case == "spread"
    label = f"{kind} {LABELS[case]}"
    with scratch(f"scale-{kind}-{case}", keep) as directory, bench_store(kind, directory) as target:
        config = directory / "schedules.toml"
        config.write_text(jobs_config(count, spread))
        env = {"PYTHONPATH": source} if source else {}
        cwd = Path(source) if source else REPO
        with Processes(directory / "logs", env=env, cwd=cwd, show_logs=False) as procs:
            spawned = time.time()
            daemon = procs.run(config, target.url)
            started = daemon.wait_for_log(r"^chronod starting", timeout=STARTUP)
            leader = daemon.wait_for_log(r"^became leader", timeout=STARTUP)
            loaded = daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
            rss_loaded, _ = rss_mib(daemon.pid)
            print(
                f"{label}: start-up with {count} jobs: config loaded"
                f" {phase(started, spawned):.1f} s, leader {phase(leader, spawned):.1f} s, job"
                f" state synced {phase(loaded, spawned):.1f} s after exec;"
                f" RSS {rss_loaded:.0f} MiB"
            )
            assert loaded.ts is not None
            first = loaded.ts.replace(second=0, microsecond=0) + MINUTE
            window_end = first + minutes * MINUTE
            peak_sampled = watch(daemon, until=window_end + timedelta(seconds=10))
            _, rss_peak = rss_mib(daemon.pid)
            print(
                f"{label}: RSS peak {rss_peak:.0f} MiB (largest 1 s sample {peak_sampled:.0f} MiB)"
            )
            runs = read_runs(target)
            for _ in range(6):  # a slow dispatch still counts, only late: look again for a minute
                if len(window_runs(runs, first, window_end)) >= count * minutes:
                    break
                time.sleep(10.0)
                runs = read_runs(target)
            daemon.term()
            daemon.wait_exit(timeout=STARTUP)
    in_window = window_runs(runs, first, window_end)
    per_job = Counter(job for job, _, _ in in_window)
    twice = Counter((job, slot) for job, slot, _ in in_window)
    complete = (
        len(per_job) == count
        and set(per_job.values()) == {minutes}
        and max(twice.values(), default=0) == 1
    )
    burst = max(Counter(slot for _, slot, _ in in_window).values(), default=0)
    by_minute: dict[datetime, list[float]] = defaultdict(list)
    for _, slot, at in in_window:
        by_minute[slot.replace(second=0, microsecond=0)].append((at - slot).total_seconds())
    for minute, lateness in sorted(by_minute.items()):
        print(f"  {label:30} minute {minute:%H:%M}   {summary_ms(lateness)}")
    everything = [x for values in by_minute.values() for x in values]
    p99 = percentile(everything, 99) if everything else float("inf")
    passed = complete and p99 < 1.0
    verdict = (
        f"{label}: {len(in_window)} of {count * minutes} slots of {minutes} minutes dispatched"
        f" ({'each exactly once' if complete else 'INCOMPLETE'}; at most {burst} due at one"
        f" instant); p99 lateness {p99 * 1000:.0f} ms"
        f" -> {'OK' if passed else 'FAILED'} (target: all, p99 < 1 s)"
    )
    print(verdict)
    return passed, verdict


def watch(daemon: ChronodProcess, until: datetime) -> float:
    """Sample the daemon's RSS every second until ``until``; return the largest sample (MiB)."""
    peak = 0.0
    while datetime.now(UTC) < until:
        if not daemon.alive():
            raise SystemExit(f"the daemon exited\n{daemon.tail()}")
        peak = max(peak, rss_mib(daemon.pid)[0])
        time.sleep(1.0)
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=STORE_CHOICES, default="both")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--case", choices=[*CASES, "both"], default="both")
    parser.add_argument(
        "--spread", action="store_true", help="the spread case only (same as --case spread)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    parser.add_argument(
        "--source",
        metavar="DIR",
        help="import the daemon's chronod from DIR (to compare two versions)",
    )
    args = parser.parse_args(argv)
    kinds = store_kinds(args.store)
    case = "spread" if args.spread else args.case
    cases = CASES if case == "both" else (case,)
    print(f"scale: {args.jobs} jobs, every one firing every minute; {machine()}")
    results = [
        measure(kind, one, args.jobs, args.minutes, args.keep, args.source)
        for one in cases
        for kind in kinds
    ]
    print("\nsummary")
    for _, verdict in results:
        print(f"  {verdict}")
    print(f"\n{reproduce('bench_scale', argv)}")
    return 0 if all(passed for passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
