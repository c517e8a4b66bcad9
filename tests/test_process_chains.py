"""Chains (``after``) as real processes, on SQLite and Redis (issue 18).

One scenario per store, to keep CI short: two upstream ``at`` jobs run at the same instant, one
succeeds and one fails; the leader is SIGKILLed while both run, so their outcomes are recorded
(by the worker) and the downstream runs decided with no leader alive. Then a leader starts
again. Each downstream that should run runs exactly once, with ``CHRONOD_UPSTREAM_RUN_ID`` and
the upstream's ``CHRONOD_SLOT``; the ``succeeded`` follower of the failed job never runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod.instants import format_utc
from chronod.store.base import Outcome, RunState, Store
from chronod.tz import UTC
from tests import test_process_scheduler as scheduled
from tests.procs import Processes, hold_for, wait_until, write_atomically
from tests.targets import Target

pytestmark = pytest.mark.process

# Far enough ahead that the leader has loaded the jobs before the instant (a job loaded after an
# instant never runs it), close enough to keep the test short.
LEAD = timedelta(seconds=5)
UPSTREAM_SECONDS = 2  # how long the upstreams run: the leader is killed meanwhile


@pytest.fixture
def store(target: Target) -> Iterator[Store]:
    opened = target.open()
    yield opened
    opened.close()


def write_config(directory: Path, at: datetime, out: Path) -> Path:
    shown = "$CHRONOD_JOB $CHRONOD_RUN_ID $CHRONOD_SLOT ${CHRONOD_UPSTREAM_RUN_ID:--}"
    record = f'echo "{shown}" >> {out}'
    jobs: dict[str, dict[str, Any]] = {
        "good": {"at": [format_utc(at)], "command": f"sleep {UPSTREAM_SECONDS}; {record}"},
        "bad": {"at": [format_utc(at)], "command": f"sleep {UPSTREAM_SECONDS}; {record}; exit 3"},
        "load": {"after": "good", "command": record},
        # overlap 'queue': the two upstreams end together, and 'skip' would drop the second run
        "cleanup": {
            "after": ["good", "bad"],
            "when": "finished",
            "overlap": "queue",
            "command": record,
        },
        "alert": {"after": "bad", "when": "failed", "command": record},
        "publish": {"after": "bad", "command": record},  # 'succeeded': never, bad fails
    }
    lines = ["[chronod]", f'lease = "{int(scheduled.TTL)}s"', "", "[defaults]", 'timezone = "UTC"']
    for name, body in jobs.items():
        lines += ["", f"[jobs.{name}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in body.items()]
    path = directory / "schedules.toml"
    write_atomically(path, "\n".join(lines) + "\n")
    return path


def test_chains_run_once_per_upstream_end_across_a_leader_sigkill(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + LEAD
    out = tmp_path / "ran.txt"
    config = write_config(tmp_path, at, out)
    worker = procs.worker(config, target.url)
    first = procs.run(config, target.url, name="first")
    loaded = scheduled.log_time(
        first.wait_for_log(r"^leading: jobs loaded", timeout=scheduled.STARTUP).ts
    )
    assert loaded < at, "the leader loaded the jobs after their instant: raise LEAD"

    def running() -> list[str]:
        return sorted(r.job for r in store.live_runs() if r.state is RunState.RUNNING)

    wait_until(
        lambda: running() == ["bad", "good"],
        timeout=LEAD.total_seconds() + scheduled.STARTUP,
        what="both upstreams running",
    )
    first.kill()  # the upstreams end, and their followers are decided, with no leader alive

    def lines() -> list[list[str]]:
        return [line.split() for line in out.read_text().splitlines()] if out.exists() else []

    # good, bad, load, alert, and cleanup once after each upstream
    wait_until(
        lambda: len(lines()) >= 6,
        timeout=scheduled.STARTUP,
        what="the upstreams and their followers to run",
        context=worker.tail,
    )
    second = procs.run(config, target.url, name="second")  # a leader again: nothing more runs
    second.wait_for_log(r"^leading: jobs loaded", timeout=scheduled.STARTUP)
    hold_for(
        lambda: len(lines()) == 6 and not store.live_runs(),
        seconds=2 * scheduled.TTL,
        what="each follower run exactly once",
    )
    scheduled.stop_all(second, worker)

    slot = format_utc(at)
    ran = sorted(" ".join(line) for line in lines())
    assert ran == sorted(
        [
            f"good good@{slot} {slot} -",
            f"bad bad@{slot} {slot} -",
            f"load load@{slot}~after~good {slot} good@{slot}",
            f"alert alert@{slot}~after~bad {slot} bad@{slot}",
            f"cleanup cleanup@{slot}~after~good {slot} good@{slot}",
            f"cleanup cleanup@{slot}~after~bad {slot} bad@{slot}",
        ]
    )
    assert store.history("publish", 10) == []
    [load] = store.history("load", 10)
    assert (load.state, load.upstream_run_id) == (Outcome.SUCCEEDED, f"good@{slot}")
