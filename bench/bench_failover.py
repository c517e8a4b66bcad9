"""Failover: time from SIGKILL of the leader to the first dispatch by the standby (real processes).

Two ``chronod run`` daemons share a store; a job is due every second. The leader is SIGKILLed (it
cannot release its lease) and the standby must wait for the lease to expire, acquire it, load the
jobs and dispatch. Figures per trial: kill → standby "became leader" (its log), and kill → the store
time of the first run dispatched under the new epoch. Expected: at most the lease TTL (less the time
since the dead leader's last renewal) + the standby's poll interval (1 s) + the load.

    .venv/bin/python -m bench.bench_failover [--store sqlite|redis|postgres|both|all] [--lease 10s]
        [--trials 3]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from bench.benchlib import (
    STORE_CHOICES,
    bench_store,
    machine,
    percentile,
    reproduce,
    scratch,
    store_kinds,
    toml_jobs,
)
from tests.procs import Processes, wait_until

STARTUP = 60.0


def trial(kind: str, lease: str, keep: bool) -> tuple[float, float]:
    """One failover; returns (seconds to 'became leader', seconds to the first new dispatch)."""
    with scratch(f"failover-{kind}", keep) as directory, bench_store(kind, directory) as target:
        config = directory / "schedules.toml"
        jobs = [("tick", {"every": "1s"})]
        config.write_text(toml_jobs(jobs, lease=lease, overlap="allow"))
        store = target.open()
        try:
            with Processes(directory / "logs", show_logs=False) as procs:
                leader = procs.run(config, target.url, name="leader")
                leader.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
                standby = procs.run(config, target.url, name="standby")
                standby.wait_for_log(r"^chronod starting", timeout=STARTUP)
                wait_until(
                    lambda: len(store.live_runs("tick")) >= 2,
                    timeout=STARTUP,
                    what="two dispatches by the leader",
                )
                info = store.leader()
                assert info is not None
                assert info.node == leader.node
                killed_at = leader.kill()
                became = standby.wait_for_log(r"^became leader", timeout=STARTUP)
                assert became.ts is not None

                def first_new() -> datetime | None:
                    new = [r.created_at for r in store.live_runs("tick") if r.epoch > info.epoch]
                    return min(new) if new else None

                first = wait_until(first_new, timeout=STARTUP, what="a dispatch by the standby")
                standby.term()
                standby.wait_exit(timeout=STARTUP)
        finally:
            store.close()
    return became.ts.timestamp() - killed_at, first.timestamp() - killed_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=STORE_CHOICES, default="both")
    parser.add_argument("--lease", default="10s", help="[chronod] lease (default: the default)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories (logs)")
    args = parser.parse_args(argv)
    kinds = store_kinds(args.store)
    print(f"failover after SIGKILL of the leader, lease {args.lease}; {machine()}")
    for kind in kinds:
        results = [trial(kind, args.lease, args.keep) for _ in range(args.trials)]
        for i, (leads, dispatches) in enumerate(results, 1):
            print(
                f"  {kind:6} trial {i}: standby leads after {leads:5.2f} s, "
                f"first dispatch after {dispatches:5.2f} s"
            )
        firsts = [d for _, d in results]
        print(
            f"{kind:6} kill -> first dispatch by the standby: median "
            f"{percentile(firsts, 50):.2f} s, max {max(firsts):.2f} s ({len(firsts)} trials)"
        )
    print(f"\n{reproduce('bench_failover', argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
