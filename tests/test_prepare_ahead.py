"""The daemon plans a crowded instant ahead of time: in parts behind many small wakes, else at once.

A real :class:`~chronod.daemon.Daemon` on a SQLite store, driven step by step with a manual clock
(each step's sleep is taken by advancing the clock): 300 jobs due at one instant, and 200 jobs due
one millisecond apart just before it — the shape of ``bench_scale --case spread`` (20,000 crons at
second 0 behind intervals due every millisecond), scaled down.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chronod import daemon as daemon_module
from chronod.clock import ManualClock
from chronod.config.loader import parse_config
from chronod.daemon import PREPARE_MIN, Daemon, DaemonStores
from chronod.instants import format_utc
from chronod.store.base import RunRecord
from chronod.store.sqlite import SQLiteStore
from chronod.tz import UTC

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CROWD_AT = T0 + timedelta(minutes=1)
CROWD, SMALL = 300, 200


def config_text(small: int = SMALL) -> str:
    def entry(name: str, anchor: datetime) -> list[str]:
        body = f'every = "1m"\nanchor = "{format_utc(anchor)}"\ncommand = "true"'
        return [f"[jobs.{name}]", body, 'overlap = "allow"', ""]

    lines = ["[chronod]", 'store = "sqlite:state.db"', "[defaults]", 'timezone = "UTC"', ""]
    for i in range(CROWD):
        lines += entry(f"c{i:03d}", T0)
    for i in range(small):
        # One every millisecond in the 200 ms before the crowded instant.
        lines += entry(f"s{i:03d}", CROWD_AT - timedelta(milliseconds=small - i))
    return "\n".join(lines)


@pytest.fixture(params=[SMALL], ids=["behind-small-wakes"])
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Daemon, ManualClock]]:
    path = tmp_path / "schedules.toml"
    text = config_text(request.param)
    path.write_text(text)
    config = parse_config(text.encode(), path)
    clock = ManualClock(CROWD_AT - timedelta(seconds=30))
    stores = DaemonStores(*(SQLiteStore(tmp_path / "state.db", clock=clock) for _ in range(4)))
    built = Daemon(config=config, stores=stores, clock=clock)
    yield built, clock
    for store in (stores.main, stores.keeper, stores.sampler, stores.courier):
        store.close()


def drive_past_crowd(daemon: Daemon, clock: ManualClock) -> list[RunRecord]:
    """Step the daemon until a second after the crowded instant; check that every crowded job
    was planned well ahead — not at its tick, nor at the last small wake (1 ms before), which is
    when planning only the next wake got to it — and return the live runs."""
    prepared_at: dict[str, datetime] = {}
    steps, renew_at = 0, clock.monotonic()
    while clock.now() < CROWD_AT + timedelta(seconds=1):
        if clock.monotonic() >= renew_at:  # the lease keeper's thread, in line
            renew_at = clock.monotonic() + daemon.keeper.step()
            assert daemon.keeper.current() is not None
        sleep = daemon.step()
        for name in daemon.scheduler._prepared:
            if name.startswith("c"):
                prepared_at.setdefault(name, clock.now())
        # A step that planned only a part asks to come back at once: time still passes.
        clock.advance(max(sleep, 1e-4))
        steps += 1
        assert steps < 100_000, "the daemon never got to the crowded instant"
    assert len(prepared_at) == CROWD
    assert max(prepared_at.values()) <= CROWD_AT - timedelta(seconds=PREPARE_MIN / 2)
    return daemon.store.live_runs()


def planned_parts(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of jobs each Scheduler.prepare call for the crowded instant planned."""
    parts: list[int] = []
    prepare = daemon.scheduler.prepare

    def counted(at: datetime, limit: int | None = None) -> int:
        planned = prepare(at, limit)
        if at == CROWD_AT:
            parts.append(planned)
        return planned

    monkeypatch.setattr(daemon.scheduler, "prepare", counted)
    monkeypatch.setattr(daemon_module, "PREPARE_CHUNK", 100)
    return parts


def test_a_crowded_instant_behind_small_wakes_is_planned_ahead_in_parts(
    daemon: tuple[Daemon, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    built, clock = daemon
    parts = planned_parts(built, monkeypatch)
    runs = drive_past_crowd(built, clock)
    # In parts of PREPARE_CHUNK (the small jobs due before it are part of the first).
    assert parts[:3] == [100, 100, 100], parts
    # Each slot once; the small ones, due while the parts were planned, each at its next step.
    assert Counter(run.job for run in runs) == {
        **{f"c{i:03d}": 1 for i in range(CROWD)},
        **{f"s{i:03d}": 1 for i in range(SMALL)},
    }
    late = [run.created_at - run.slot for run in runs if run.job.startswith("s")]
    assert max(late) < timedelta(milliseconds=1)
    assert all(run.slot == CROWD_AT for run in runs if run.job.startswith("c"))


@pytest.mark.parametrize("daemon", [0], ids=["alone"], indirect=True)
def test_a_crowded_instant_with_nothing_due_before_it_is_planned_at_once(
    daemon: tuple[Daemon, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    built, clock = daemon
    parts = planned_parts(built, monkeypatch)
    runs = drive_past_crowd(built, clock)
    # No tick is due before it, so nothing is gained by parts (each walks the heap again).
    assert parts[0] == CROWD, parts
    assert len(runs) == CROWD
