"""``chronod run`` as real processes on the PostgreSQL store: two daemons, the leader SIGKILLed, the
leader SIGSTOPped past its lease (fenced when it resumes), and every chronod connection killed
with ``pg_terminate_backend`` mid-dispatch: every slot once.

The patterns and helpers are those of ``test_process_scheduler.py`` (``--workers 0``, so live runs
are exactly what was dispatched; 2 s leases); each test's daemons keep their state in a schema of
their own (``[chronod] namespace``) in the session's test database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chronod.store import StoreSettings, open_store
from chronod.store.base import Store
from tests.postgres_server import PostgresDatabase, new_namespace
from tests.procs import Processes, wait_until, write_atomically
from tests.targets import Target
from tests.test_process_scheduler import (
    SECOND,
    STARTUP,
    TTL,
    assert_every_second,
    assert_unique_run_ids,
    config_text,
    kill_and_take_over,
    log_time,
    slots_of,
    start_pair,
    stop_all,
    stop_between_ticks,
    wait_for_run_after,
)

pytestmark = [pytest.mark.process, pytest.mark.postgres]


@pytest.fixture
def namespace() -> str:
    return new_namespace()


@pytest.fixture
def target(postgres_db: PostgresDatabase, tmp_path: Path) -> Target:
    return Target("postgres", postgres_db.url, tmp_path, None)


@pytest.fixture
def store(target: Target, namespace: str) -> Iterator[Store]:
    opened = open_store(
        StoreSettings(url=target.url, config_dir=target.directory, namespace=namespace)
    )
    yield opened
    opened.close()


def write_config(directory: Path, namespace: str) -> Path:
    text = config_text({"tick": {"every": "1s", "grace": "30s"}})
    text = text.replace("[chronod]\n", f'[chronod]\nnamespace = "{namespace}"\n', 1)
    path = directory / "schedules.toml"
    write_atomically(path, text)
    return path


def test_sigkill_of_the_leader_every_slot_once(
    target: Target, store: Store, procs: Processes, tmp_path: Path, namespace: str
) -> None:
    config = write_config(tmp_path, namespace)
    first, second = start_pair(procs, config, target, store)
    failover, takeover = kill_and_take_over(first, second, store)
    assert failover <= TTL + 2.0
    wait_for_run_after(store, "tick", takeover + 2 * SECOND, timeout=STARTUP)
    stop_all(second)

    runs = store.live_runs("tick")
    assert_unique_run_ids(runs)
    assert_every_second(slots_of(runs), "dispatched slots")  # the failover gap included
    assert len({r.epoch for r in runs}) == 2


def test_connections_killed_mid_dispatch_every_slot_once(
    target: Target,
    store: Store,
    procs: Processes,
    tmp_path: Path,
    namespace: str,
    postgres_db: PostgresDatabase,
) -> None:
    config = write_config(tmp_path, namespace)
    first, second = start_pair(procs, config, target, store)
    wait_until(lambda: len(store.live_runs("tick")) >= 2, timeout=STARTUP, what="2 dispatches")
    killed = 0
    for _ in range(3):  # every chronod connection, three times, a second apart
        killed += postgres_db.terminate()
        count = len(store.live_runs("tick"))
        wait_until(
            lambda count=count: len(store.live_runs("tick")) > count,  # type: ignore[misc]
            timeout=STARTUP,
            what="a dispatch after the connections were killed",
        )
    assert killed >= 3
    stop_all(first, second)

    runs = store.live_runs("tick")
    assert_unique_run_ids(runs)
    assert_every_second(slots_of(runs), "dispatched slots")
    assert first.alive() is False


def test_sigstop_of_the_leader_is_fenced_and_nothing_runs_twice(
    target: Target, store: Store, procs: Processes, tmp_path: Path, namespace: str
) -> None:
    config = write_config(tmp_path, namespace)
    first, second = start_pair(procs, config, target, store)
    wait_until(lambda: len(store.live_runs("tick")) >= 2, timeout=STARTUP, what="2 dispatches")
    stop_between_ticks(first, target)
    takeover = log_time(second.wait_for_log(r"^became leader", timeout=TTL + STARTUP).ts)
    wait_for_run_after(store, "tick", takeover + SECOND, timeout=STARTUP)
    resumed = first.last_index()
    first.cont()
    first.wait_for_log(r"^stepped down \(epoch \d+\)", timeout=STARTUP, after=resumed)
    wait_for_run_after(store, "tick", takeover + 3 * SECOND, timeout=STARTUP)
    info = store.leader()
    assert info is not None
    assert info.node == second.node
    stop_all(first, second)

    runs = store.live_runs("tick")
    assert_unique_run_ids(runs)
    assert_every_second(slots_of(runs), "dispatched slots")
    epochs = sorted({r.epoch for r in runs})
    assert len(epochs) == 2, epochs
    old = [r for r in runs if r.epoch == epochs[0]]
    assert max(r.created_at for r in old) < takeover  # fenced: nothing from the old epoch after
