"""``at`` jobs as real processes: each instant runs once across a leader SIGKILL (issue 18).

Same setup as tests/test_process_scheduler.py (its helpers): daemons with ``--workers 0``, so
every dispatched slot stays a live run and the store's live runs are exactly what was dispatched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chronod.instants import format_utc
from chronod.store.base import Outcome, Store
from chronod.tz import UTC
from tests import test_process_scheduler as scheduled
from tests.procs import Processes, hold_for, wait_until
from tests.targets import Target

pytestmark = pytest.mark.process

# Far enough ahead that both daemons have loaded the job before the first instant (a job loaded
# after an instant never runs it: edits never fire early), close enough to keep the test short.
LEAD = timedelta(seconds=8)
SPACING = timedelta(seconds=2)


@pytest.fixture
def store(target: Target) -> Iterator[Store]:
    opened = target.open()
    yield opened
    opened.close()


def test_each_at_instant_runs_once_across_a_leader_sigkill(
    target: Target, store: Store, procs: Processes, tmp_path: Path
) -> None:
    first_at = datetime.now(UTC).replace(microsecond=0) + LEAD
    instants = [first_at + i * SPACING for i in range(3)]
    config = scheduled.write_config(
        tmp_path,
        {"once": {"at": [format_utc(at) for at in instants], "grace": "30s"}},
    )
    first, second = scheduled.start_pair(procs, config, target, store)
    loaded = scheduled.log_time(first.find(r"^leading: jobs loaded")[0].ts)
    assert loaded < first_at, "the leader loaded the job after its first instant: raise LEAD"

    def slots() -> list[datetime]:
        return sorted(run.slot for run in store.live_runs("once"))

    wait_until(
        lambda: slots() == instants[:1], timeout=scheduled.STARTUP, what="the first instant's run"
    )
    first.kill()  # between the first instant and the second: the standby owns the rest
    second.wait_for_log(r"^became leader", timeout=scheduled.TTL + scheduled.STARTUP)
    wait_until(lambda: slots() == instants, timeout=scheduled.STARTUP, what="every instant's run")
    # Nothing more comes: the schedule has ended, and no instant is dispatched again.
    hold_for(
        lambda: slots() == instants, seconds=2 * scheduled.TTL, what="exactly one run per instant"
    )
    scheduled.stop_all(second)

    runs = store.live_runs("once")
    scheduled.assert_unique_run_ids(runs)
    assert len({run.epoch for run in runs}) == 2  # the kill really split the instants
    assert [h for h in store.history("once", 100) if h.state is Outcome.MISSED] == []
    state = store.job_states()["once"]
    assert state.last_slot == instants[-1]
    assert state.next_due is None
    for at in instants:
        assert target.guarded("once", at), f"no guard for {format_utc(at)}"
