"""Store faults and bad stored data, in-process (issue 12): SQLite errors become declared errors,
files that are not chronod's database are refused in one line, malformed runs are quarantined on
both stores, and the lease keeper and store health survive and report failing writes.

The process-level halves (a full disk under running daemons, ``chronod run`` on a bad file) are in
``test_process_faults.py``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest

from chronod import ops
from chronod.cli import main
from chronod.clock import ManualClock, SystemClock
from chronod.config import load_config
from chronod.errors import (
    StoreCorrupt,
    StoreDiskError,
    StoreError,
    StoreUnavailable,
    TransientError,
)
from chronod.lock import LeaseKeeper
from chronod.metrics import ChronodMetrics
from chronod.store.base import (
    DispatchStatus,
    JobSync,
    Lease,
    Outcome,
    RunRecord,
    SlotDispatch,
    Store,
    overlap_reason,
    superseded_reason,
)
from chronod.store.redis import RedisStore
from chronod.store.redis.connection import DirectExecutor
from chronod.store.sqlite import SQLiteStore
from chronod.store.sqlite.connection import result_code as _result_code
from chronod.telemetry import QUIET_AFTER, EventWriter, StoreHealth
from chronod.tz import UTC
from chronod.web import start_web
from chronod.worker import ConfigSource, Consumer, ConsumerSettings
from tests.procs import wait_until

MINUTE = timedelta(minutes=1)
CONFIG = """[defaults]
timezone = "UTC"

[jobs.alpha]
every = "1h"
command = "true"
"""

# -- SQLite errors -----------------------------------------------------------------------------


def test_a_full_disk_is_a_transient_disk_error_and_writes_resume_by_themselves(
    tmp_path: Path,
) -> None:
    """``PRAGMA max_page_count`` makes SQLite answer exactly as on a full disk (SQLITE_FULL)."""
    store = SQLiteStore(tmp_path / "state.db")
    try:
        store.set_paused("kept", True)
        with store._read() as conn:  # the limit is per connection: set it on the store's own
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        def fill() -> None:
            for i in range(500):
                store.set_paused(f"job-{i:04d}-{'x' * 200}", True)

        with pytest.raises(StoreDiskError) as info:
            fill()
        assert isinstance(info.value, TransientError)
        assert "disk is full" in str(info.value)
        assert "\n" not in str(info.value)
        assert store.job_states()["kept"].paused  # reads go on; nothing half-written
        with store._read() as conn:  # "space freed"
            conn.execute("PRAGMA max_page_count = 1073741823")
        store.set_paused("after", True)
        assert {"kept", "after"} <= set(store.job_states())
    finally:
        store.close()


@pytest.mark.parametrize(
    ("message", "code", "error", "words"),
    [
        ("database is locked", 5, StoreUnavailable, "busy"),
        ("database table is locked", 6, StoreUnavailable, "busy"),
        ("attempt to write a readonly database", 8, StoreDiskError, "cannot be written"),
        ("disk I/O error", 10, StoreDiskError, "disk I/O error"),
        ("database disk image is malformed", 11, StoreCorrupt, "is corrupt"),
        ("database or disk is full", 13, StoreDiskError, "disk is full"),
        ("unable to open database file", 14, StoreUnavailable, "unable to open"),
        ("file is not a database", 26, StoreCorrupt, "is corrupt"),
        ("no such savepoint: x", 1, StoreError, "no such savepoint"),
    ],
)
@pytest.mark.parametrize("with_code", [True, False], ids=["py311", "py310"])
def test_sqlite_errors_become_declared_errors(
    tmp_path: Path,
    message: str,
    code: int,
    error: type[StoreError],
    words: str,
    with_code: bool,
) -> None:
    """By result code (Python 3.11+) or, without one (3.10), by SQLite's text for it."""
    exc = sqlite3.OperationalError(message)
    if with_code:
        exc.sqlite_errorcode = code
    assert _result_code(exc) == (code if code != 1 or with_code else None)
    store = SQLiteStore(tmp_path / "state.db")

    class Failing:
        in_transaction = False

        def execute(self, *_: object) -> None:
            raise exc

    store._connection = Failing  # type: ignore[assignment, method-assign]
    with pytest.raises(StoreError) as info:
        store.job_states()
    assert type(info.value) is error
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, TransientError) == (error in (StoreUnavailable, StoreDiskError))


# -- files that are not chronod's database ---------------------------------------------------


def chronod_database(path: Path, jobs: int = 200) -> None:
    """A real chronod database with some content, folded into one file (no -wal left)."""
    store = SQLiteStore(path)
    for i in range(jobs):
        store.set_paused(f"job-{i:04d}-{'x' * 60}", True)
    store.close()
    assert not path.with_name(path.name + "-wal").exists()


def make_bad_file(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-sqlite":
        path.write_text("key = value\n" * 100)
    elif kind == "foreign":
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("INSERT INTO users (name) VALUES ('ada')")
            conn.commit()
    elif kind == "truncated":
        chronod_database(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":  # the header survives, every page after it is noise
        chronod_database(path)
        header = path.read_bytes()
        noise = random.Random(12).randbytes(len(header) - 100)
        path.write_bytes(header[:100] + noise)
    else:
        raise AssertionError(kind)


BAD_FILES = {
    "empty": "is an empty file (0 bytes)",
    "not-sqlite": "is corrupt (file is not a database)",
    "foreign": "is a SQLite database but not chronod's",
    "truncated": "is corrupt (database disk image is malformed)",
    "corrupt": "is corrupt",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_file_that_is_not_a_usable_chronod_database_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "state.db"
    make_bad_file(path, kind)
    before = path.read_bytes()
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreCorrupt) as info:
            store.job_states()
    finally:
        store.close()
    text = str(info.value)
    assert BAD_FILES[kind] in text
    assert str(path) in text
    assert "\n" not in text
    assert "restore" in text or "point the store URL" in text  # says what to do
    assert not isinstance(info.value, TransientError)
    assert path.read_bytes() == before  # never "repaired" into an empty database
    if kind == "foreign":  # not even switched to WAL
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_verify_finds_damage_that_reading_the_tables_misses(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    chronod_database(path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[len(data) - page : len(data) - page + 512] = random.Random(3).randbytes(512)
    path.write_bytes(bytes(data))
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreCorrupt, match="is corrupt"):
            store.verify()
    finally:
        store.close()


def test_verify_passes_a_healthy_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    chronod_database(path)
    store = SQLiteStore(path)
    try:
        store.verify()
    finally:
        store.close()


def test_a_database_appears_only_complete(tmp_path: Path) -> None:
    """The file at the store's path is never empty, even at the instant it is created: a scratch
    file is built and linked into place, so concurrent openers never see a 0-byte database."""
    path = tmp_path / "state" / "chronod.db"
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with suppress(FileNotFoundError):
                seen.append(path.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    stores = [SQLiteStore(path) for _ in range(4)]
    try:
        threads = [threading.Thread(target=s.job_states) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        watcher.join()
        for store in stores:
            store.close()
    assert seen
    assert 0 not in seen
    assert sorted(p.name for p in path.parent.iterdir()) == ["chronod.db"]  # no scratch left


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["status", "history"])
def test_status_and_history_on_a_bad_file_say_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, command: str
) -> None:
    path = tmp_path / "state.db"
    make_bad_file(path, kind)
    config = tmp_path / "schedules.toml"
    config.write_text(CONFIG)
    argv = ["--config", str(config), "--store", f"sqlite://{path}", command]
    argv += ["--job", "alpha"] if command == "history" else []
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("chronod: error: SQLite store "), err
    assert BAD_FILES[kind] in err


# -- malformed runs (both stores) ------------------------------------------------------------


def raw_redis(store: Store) -> Any:
    """The client of the server a test's RedisStore talks to, to write what chronod never would
    (as anyone with write access to the store could)."""
    assert isinstance(store, RedisStore)
    executor = store._exec
    assert isinstance(executor, DirectExecutor)
    return executor.client


def poison(store: Store, run_id: str, field: str, value: object) -> None:
    """Overwrite (``None``: delete, on Redis) one field of a live run, as anyone with write access
    to the store could."""
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store._path)) as conn:
            conn.execute(f"UPDATE runs SET {field} = ? WHERE run_id = ?", (value, run_id))
            conn.commit()
        return
    assert isinstance(store, RedisStore)
    client, key = raw_redis(store), store._keys.run(run_id)
    if value is None:
        client.hdel(key, field)
    else:
        client.hset(key, field, value)


def poison_history(store: Store, job: str, entry: str) -> None:
    """Add a history entry chronod cannot read: ``entry`` is the raw Redis list element, or for
    SQLite the name of a column that gets text instead of a number."""
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store._path)) as conn:
            conn.execute(
                f"""INSERT INTO history (run_id, job, slot, manual, outcome, queue, digest, epoch,
                    attempt, max_attempts, created_at) VALUES
                    ('{job}@forged', '{job}', 1, 0, 'succeeded', 'default', 'd', 1, 1, 1, 1)"""
            )
            conn.execute(f"UPDATE history SET {entry} = 'garbage' WHERE run_id = '{job}@forged'")
            conn.commit()
        return
    assert isinstance(store, RedisStore)
    raw_redis(store).lpush(store._keys.history(job), entry)


def manual_run(store: Store, job: str = "alpha") -> RunRecord:
    return store.enqueue_manual(job, "default", "digest", "allow", 1)


POISONS = {  # field: (SQLite value, Redis value (None: missing), words of the problem)
    "epoch": ("abc", "abc", "epoch is not an integer"),
    "slot": (10**18, "1e30", "slot is out of range"),
    "digest": (b"\x00", None, "digest is"),
    "manual": ("yes", "yes", "manual is not"),
    "created_at": (1.5, "-5", "created_at is"),
}


@pytest.mark.parametrize("field", sorted(POISONS))
def test_claim_quarantines_a_malformed_run_and_takes_the_next(
    store: Store, store_kind: str, field: str
) -> None:
    sqlite_value, redis_value, words = POISONS[field]
    bad = manual_run(store)
    good = manual_run(store)
    poison(store, bad.run_id, field, sqlite_value if store_kind == "sqlite" else redis_value)
    claim = store.claim("worker-1", ["default"], "token-1", timedelta(seconds=30), 0)
    assert claim is not None
    assert claim.run.run_id == good.run_id
    [found] = store.drain_quarantined()
    assert (found.run_id, found.job) == (bad.run_id, "alpha")
    assert words in found.problem
    assert store.drain_quarantined() == []  # reported once
    [entry] = store.history("alpha", 10)
    assert (entry.run_id, entry.state) == (bad.run_id, Outcome.QUARANTINED)
    assert entry.error is not None
    assert words in entry.error
    assert [r.run_id for r in store.live_runs()] == [good.run_id]
    assert store.job_states()["alpha"].last_outcome is Outcome.QUARANTINED
    assert store.heartbeat(good.run_id, claim.token, timedelta(seconds=30))


def test_a_waiting_run_behind_a_quarantined_one_is_released(store: Store) -> None:
    first = store.enqueue_manual("alpha", "default", "digest", "skip", 1)
    second = store.enqueue_manual("alpha", "default", "digest", "skip", 1)  # waits behind it
    poison(store, first.run_id, "epoch", "abc")
    claim = store.claim("worker-1", ["default"], "token-1", timedelta(seconds=30), 0)
    assert claim is not None
    assert claim.run.run_id == second.run_id


def test_a_malformed_run_that_is_never_ready_is_swept(tmp_path: Path) -> None:
    """SQLite: text in ``not_before`` sorts after every number, so claim would never meet the
    run, yet it would count as the job's active run forever (overlap=skip skips every slot)."""
    store = SQLiteStore(tmp_path / "state.db")
    try:
        bad = manual_run(store)
        poison(store, bad.run_id, "not_before", "soon")
        assert store.claim("worker-1", ["default"], "t", timedelta(seconds=30), 0) is None
        [found] = store.drain_quarantined()
        assert found.run_id == bad.run_id
        assert "not_before" in found.problem
        assert store.live_runs() == []
        assert store.job_states()["alpha"].active == 0
    finally:
        store.close()


def test_reads_show_malformed_records_as_quarantined_and_status_answers(
    store: Store, store_kind: str, tmp_path: Path
) -> None:
    live = manual_run(store)
    poison(store, live.run_id, "epoch", "abc")
    if store_kind == "sqlite":
        poison_history(store, "alpha", "slot")
    else:
        poison_history(store, "alpha", "this is not json")
        poison_history(store, "alpha", '["a", "list"]')
        poison_history(store, "alpha", '{"run_id": "alpha@x", "slot": "soon", "state": "failed"}')
    [shown] = store.live_runs("alpha")
    assert (shown.run_id, shown.state) == (live.run_id, Outcome.QUARANTINED)
    assert shown.error is not None
    assert "epoch is not an integer" in shown.error
    stored = store.run(live.run_id)
    assert stored is not None
    assert stored.state is Outcome.QUARANTINED
    entries = store.history("alpha", 10)
    assert entries
    assert all(e.state is Outcome.QUARANTINED for e in entries)
    assert all(e.error and e.error.startswith("unreadable record: ") for e in entries)
    (tmp_path / "schedules.toml").write_text(CONFIG)
    config = load_config(tmp_path / "schedules.toml")
    history = ops.job_history(store, "alpha", 10, config)
    assert len(history.runs) == len(entries)
    ops.history_json(history)
    status = ops.cluster_status(store, config, store.now())
    ops.status_json(status)


def test_a_worker_quarantines_logs_and_keeps_running_jobs(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = tmp_path / "schedules.toml"
    marker = tmp_path / "ran"
    config_path.write_text(CONFIG.replace('command = "true"', f'command = "touch {marker}"'))
    config = load_config(config_path)
    spec = config.jobs["alpha"]
    bad = store.enqueue_manual("alpha", spec.queue, spec.digest, "allow", spec.max_attempts)
    good = store.enqueue_manual("alpha", spec.queue, spec.digest, "allow", spec.max_attempts)
    poison(store, bad.run_id, "epoch", "abc")
    settings = ConsumerSettings(claim_wait=0.2, store_backoff=(0.01,))
    consumer = Consumer(store, ConfigSource(config), settings)
    try:
        with caplog.at_level(logging.INFO, logger="chronod"):
            claim = consumer.step()
    finally:
        consumer.close()
    assert claim is not None
    assert claim.run.run_id == good.run_id
    assert marker.exists()
    outcomes = {e.run_id: e.state for e in store.history("alpha", 10)}
    assert outcomes == {bad.run_id: Outcome.QUARANTINED, good.run_id: Outcome.SUCCEEDED}
    lines = [r.getMessage() for r in caplog.records if "quarantined run" in r.getMessage()]
    assert len(lines) == 1
    assert bad.run_id in lines[0]
    assert "epoch" in lines[0]


# -- slots skipped for overlap say why (both stores) ----------------------------------------


def slot(job: str, at: datetime, **overrides: Any) -> SlotDispatch:
    values: dict[str, Any] = {
        "job": job,
        "fingerprint": "fp",
        "slot": at,
        "next_due": at + MINUTE,
        "queue": "default",
        "digest": "digest",
        "overlap": "skip",
        "max_attempts": 1,
        "guard_ttl": timedelta(days=1),
    }
    values.update(overrides)
    return SlotDispatch(**values)


@pytest.fixture
def leading(store: Store) -> tuple[Lease, datetime]:
    lease = store.acquire_lease("node", "lease-token", timedelta(minutes=5))
    assert lease is not None
    base = store.now().replace(microsecond=0) - timedelta(hours=1)
    store.sync_jobs(lease, [JobSync(name="alpha", fingerprint="fp", next_due=base)], base)
    return lease, base


def test_a_slot_skipped_for_overlap_names_the_active_run(
    store: Store, leading: tuple[Lease, datetime]
) -> None:
    lease, base = leading
    first, second, third = (base + n * MINUTE for n in (1, 2, 3))
    [queued] = store.dispatch(lease, [slot("alpha", first)])
    assert queued.status is DispatchStatus.QUEUED
    [skipped] = store.dispatch(lease, [slot("alpha", second)])
    assert skipped.status is DispatchStatus.SKIPPED
    store.claim("worker-1", ["default"], "t1", timedelta(seconds=30), 0)
    [again] = store.dispatch(lease, [slot("alpha", third)])
    assert again.status is DispatchStatus.SKIPPED
    newest, older = store.history("alpha", 10)
    assert older.error == overlap_reason(f"alpha@{fmt(first)}", "queued")
    assert newest.error == overlap_reason(f"alpha@{fmt(first)}", "running")


def test_superseded_slots_are_skipped_with_their_reason_and_the_newest_runs(
    store: Store, leading: tuple[Lease, datetime]
) -> None:
    """What the scheduler sends for slots due together with overlap=skip (chronod.dispatch)."""
    lease, base = leading
    slots = [base + n * MINUTE for n in (1, 2, 3)]
    newest = f"alpha@{fmt(slots[-1])}"
    items = [slot("alpha", at, superseded_by=newest) for at in slots[:-1]]
    items.append(slot("alpha", slots[-1]))
    results = store.dispatch(lease, items)
    assert [r.status for r in results] == [DispatchStatus.SKIPPED] * 2 + [DispatchStatus.QUEUED]
    assert [r.run_id for r in store.live_runs("alpha")] == [newest]
    reasons = [(e.run_id, e.state, e.error) for e in reversed(store.history("alpha", 10))]
    assert reasons == [
        (f"alpha@{fmt(at)}", Outcome.SKIPPED, superseded_reason(newest)) for at in slots[:-1]
    ]
    assert store.dispatch(lease, items)[0].status is DispatchStatus.DUPLICATE


def fmt(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the lease keeper and store health ---------------------------------------------------------


class Switchable(SQLiteStore):
    """A SQLite store whose writes fail with ``failure`` while it is set."""

    failure: Exception | None = None

    def acquire_lease(self, node: str, token: str, ttl: timedelta) -> Lease | None:
        if self.failure is not None:
            raise self.failure
        return super().acquire_lease(node, token, ttl)

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        if self.failure is not None:
            raise self.failure
        return super().renew_lease(lease, ttl)


@pytest.fixture
def switchable(tmp_path: Path) -> Iterator[Switchable]:
    store = Switchable(tmp_path / "state.db")
    yield store
    store.close()


def keeper_for(store: Store, seen: list[StoreError | None]) -> LeaseKeeper:
    return LeaseKeeper(
        store,
        node="node",
        ttl=timedelta(seconds=0.6),
        clock=SystemClock(),
        on_store=seen.append,
    )


def test_the_lease_keeper_survives_a_full_disk_and_leads_once_writes_work(
    switchable: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[StoreError | None] = []
    keeper = keeper_for(switchable, seen)
    switchable.failure = StoreDiskError("the disk is full")
    with caplog.at_level(logging.DEBUG, logger="chronod.lease"):
        keeper.start()
        try:
            wait_until(lambda: len(seen) >= 3, timeout=10, what="three failed attempts")
            assert keeper.alive()
            assert keeper.current() is None
            switchable.failure = None
            wait_until(keeper.current, timeout=10, what="leadership once writes work")
            assert None in seen  # a write succeeded and was reported
        finally:
            keeper.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "the disk is full" in warnings[0].getMessage()
    assert keeper.failure is None


def test_a_lease_keeper_that_hits_a_bug_ends_and_says_why(switchable: Switchable) -> None:
    woken = threading.Event()
    keeper = LeaseKeeper(
        switchable,
        node="node",
        ttl=timedelta(seconds=1),
        clock=SystemClock(),
        on_change=lambda _: woken.set(),
    )
    switchable.failure = ZeroDivisionError("a bug")
    keeper.start()
    try:
        assert woken.wait(10)
        wait_until(lambda: not keeper.alive(), timeout=10, what="the keeper thread to end")
        assert keeper.failure is not None
        assert "ZeroDivisionError: a bug" in keeper.failure
    finally:
        keeper.stop()


def test_store_health_reports_failing_writes_once_and_their_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    metrics = ChronodMetrics()
    health = StoreHealth(clock, metrics)
    with caplog.at_level(logging.INFO, logger="chronod"):
        health.ok()
        for _ in range(5):
            health.failed(StoreDiskError("disk is full"))
            health.ok()  # reads keep working: not a flap back to "writable"
        assert health.outage() == "store cannot write since 2026-12-04T10:00:00Z: disk is full"
        assert metrics.registry.get_sample_value("chronod_store_writable") == 0
        assert metrics.registry.get_sample_value("chronod_store_write_failures_total") == 5
        assert metrics.registry.get_sample_value("chronod_store_up") == 1
        health.wrote()  # a write went through, but failures are too recent to call it over
        assert health.outage() is not None
        clock.advance(QUIET_AFTER)
        health.wrote()
    assert health.outage() is None
    assert metrics.registry.get_sample_value("chronod_store_writable") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "write" in m] == [
        "store cannot write, not dispatching until it can: disk is full",
        "store accepts writes again",
    ]


def test_a_corrupt_store_is_fatal_and_children_report_it() -> None:
    clock = ManualClock(datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    health = StoreHealth(clock)
    read_fd, write_fd = os.pipe()
    writer = EventWriter(write_fd)
    writer.store(StoreCorrupt("SQLite store x is corrupt"))
    writer.store(StoreCorrupt("SQLite store x is corrupt"))  # only changes are sent
    writer.store(None)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        lines = pipe.read().decode().splitlines()
    assert len(lines) == 2
    health.reported(json.loads(lines[0]))
    assert health.fatal == "SQLite store x is corrupt"


def test_event_writer_sends_store_changes_and_repeats_a_state_that_lasts() -> None:
    sent: list[str] = []
    now = [0.0]
    writer = EventWriter(None, monotonic=lambda: now[0])
    writer.emit = lambda _kind, **fields: sent.append(str(fields["state"]))  # type: ignore[method-assign]
    for exc in (None, None, StoreDiskError("full"), StoreDiskError("full"), None):
        writer.store(exc)
    assert sent == ["wrote", "disk", "wrote"]  # changes only, at first
    now[0] += QUIET_AFTER / 2
    writer.store(None)  # still fine: said again, so the supervisor can end a run of failures
    writer.store(None)
    assert sent == ["wrote", "disk", "wrote", "wrote"]


# -- the web API keeps answering ---------------------------------------------------------------


def web_get(url: str) -> tuple[int, Any]:
    try:
        with urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_web_api_answers_over_malformed_records_and_a_corrupt_store(tmp_path: Path) -> None:
    config = tmp_path / "schedules.toml"
    config.write_text(CONFIG)
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        bad = manual_run(store)
        poison(store, bad.run_id, "slot", 10**18)
        poison_history(store, "alpha", "epoch")
    finally:
        store.close()
    handle = start_web(config, f"sqlite://{path}", "127.0.0.1:0", token="")
    try:
        base = handle.url.rstrip("/")
        status, body = web_get(f"{base}/api/v1/jobs/alpha/history?limit=10")
        assert status == 200
        runs = body["live"] + body["runs"]
        assert {run["outcome"] for run in runs} == {"quarantined"}
        assert web_get(f"{base}/api/v1/status")[0] == 200
        assert web_get(f"{base}/api/v1/jobs")[0] == 200
        make_bad_file(tmp_path / "other.db", "corrupt")
    finally:
        handle.stop()
    handle = start_web(config, f"sqlite://{tmp_path / 'other.db'}", "127.0.0.1:0", token="")
    try:
        status, body = web_get(f"{handle.url.rstrip('/')}/api/v1/status")
        assert status == 500
        assert "is corrupt" in body["error"]
        assert "\n" not in body["error"]
    finally:
        handle.stop()


def test_a_malformed_lease_reads_as_no_leader(store: Store) -> None:
    lease = store.acquire_lease("node", "token", timedelta(minutes=1))
    assert lease is not None
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store._path)) as conn:
            conn.execute("UPDATE lease SET expires_at = 'soon'")
            conn.commit()
    else:  # (a non-numeric expiry fails inside leader.lua: a one-line StoreError)
        assert isinstance(store, RedisStore)
        raw_redis(store).hset(store._keys.lease, "epoch", "first")
    assert store.leader() is None
