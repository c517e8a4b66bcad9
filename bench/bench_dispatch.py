"""Dispatch lateness of a real ``chronod run`` daemon: N jobs due at the same second.

Lateness of a slot = the store-time instant of its dispatch decision (a run's ``created_at``:
SQLite's clock inside the write transaction, Redis ``TIME`` inside the dispatch script) minus the
slot's instant. The daemon runs as a real process (``--workers 0``, so runs stay queued and are read
back from the store); all N jobs share one interval, so every round puts N slots due at the same
instant. Figures: p50 / p99 / max over all rounds, and per round.

    .venv/bin/python -m bench.bench_dispatch [--store sqlite|redis|postgres|both|all] [--jobs 1000]
        [--every 5s] [--rounds 6] [--source DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from bench.benchlib import (
    STORE_CHOICES,
    bench_store,
    machine,
    reproduce,
    scratch,
    store_kinds,
    summary_ms,
    toml_jobs,
)
from chronod.durations import parse_duration
from chronod.tz import UTC
from tests.procs import REPO, Processes, wait_until

STARTUP = 120.0


def measure(
    kind: str, jobs: int, every: timedelta, rounds: int, keep: bool, source: str | None
) -> list[float]:
    """Run the daemon through ``rounds`` due instants; return every slot's lateness (seconds)."""
    with scratch(f"dispatch-{kind}", keep) as directory, bench_store(kind, directory) as target:
        config = directory / "schedules.toml"
        body = {"every": f"{int(every.total_seconds())}s"}
        config.write_text(
            toml_jobs([(f"job{i:05d}", body) for i in range(jobs)], overlap="allow", grace="60s")
        )
        env = {"PYTHONPATH": source} if source else {}
        cwd = Path(source) if source else REPO
        with Processes(directory / "logs", env=env, cwd=cwd, show_logs=False) as procs:
            daemon = procs.run(config, target.url)
            loaded = daemon.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
            assert loaded.ts is not None
            step = every.total_seconds()
            first = datetime.fromtimestamp((loaded.ts.timestamp() // step + 1) * step, UTC)
            last = first + (rounds - 1) * every
            # The rounds are the scenario: wait them out on the wall clock, without polling the
            # store (a reader would compete with the daemon for the store while it dispatches).
            time.sleep(max((last - datetime.now(UTC)).total_seconds() + 2.0, 0.0))
            store = target.open()
            try:
                wait_until(
                    lambda: len(store.live_runs()) >= jobs * rounds,
                    timeout=STARTUP,
                    what=f"{jobs * rounds} dispatches",
                    interval=0.5,
                    context=daemon.tail,
                )
                runs = [r for r in store.live_runs() if first <= r.slot <= last]
            finally:
                store.close()
            daemon.term()
            daemon.wait_exit(timeout=STARTUP)
    by_round: dict[datetime, list[float]] = defaultdict(list)
    for run in runs:
        by_round[run.slot].append((run.created_at - run.slot).total_seconds())
    if len(runs) != jobs * rounds or len(by_round) != rounds:
        raise SystemExit(f"{kind}: expected {rounds} rounds of {jobs}, got {len(runs)} runs")
    for slot, lateness in sorted(by_round.items()):
        print(f"  {kind:6} round {slot:%H:%M:%S}   {summary_ms(lateness)}")
    return [x for values in by_round.values() for x in values]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=STORE_CHOICES, default="both")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--every", default="5s", help="interval of every job (whole seconds)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    parser.add_argument(
        "--source",
        metavar="DIR",
        help="import the daemon's chronod from DIR (to compare two versions)",
    )
    args = parser.parse_args(argv)
    every = parse_duration(args.every)
    kinds = store_kinds(args.store)
    print(
        f"dispatch lateness, {args.jobs} jobs due at the same instant every {args.every}, "
        f"{args.rounds} rounds; {machine()}"
    )
    results = {
        kind: measure(kind, args.jobs, every, args.rounds, args.keep, args.source) for kind in kinds
    }
    print()
    for kind, lateness in results.items():
        print(f"{kind:6} all rounds   {summary_ms(lateness)}")
    print(f"\n{reproduce('bench_dispatch', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
