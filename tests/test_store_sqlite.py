"""SQLite-only properties of :class:`~chronod.store.sqlite.SQLiteStore`.

The behaviour both stores share is tested in ``test_store_contract.py``; this file covers what only
the embedded store has: pragmas that must take effect on every connection, private files, the
schema version, error mapping, fork safety, the guard table, the cheap blocking claim, and — with
real processes — concurrent claims and SIGKILL at random instants.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from chronod.clock import ManualClock
from chronod.errors import StoreError, StoreUnavailable
from chronod.instants import format_utc, from_micros, slot_id, to_micros
from chronod.store.base import (
    AttemptResult,
    Claim,
    DispatchStatus,
    Fenced,
    JobSync,
    Lease,
    Outcome,
    RunState,
    SlotDispatch,
)
from chronod.store.sqlite import SCHEMA_VERSION, SQLiteStore
from chronod.tz import UTC

REPO = Path(__file__).resolve().parent.parent
FP = "fp-1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
LONG = timedelta(hours=1)


def item(
    job: str, slot: datetime, *, guard_ttl: timedelta = timedelta(hours=24), max_attempts: int = 1
) -> SlotDispatch:
    return SlotDispatch(
        job=job,
        fingerprint=FP,
        slot=slot,
        next_due=slot + MINUTE,
        queue="default",
        digest="digest-1",
        overlap="allow",
        max_attempts=max_attempts,
        guard_ttl=guard_ttl,
    )


def leader_of(store: SQLiteStore, jobs: tuple[str, ...], loaded_at: datetime) -> Lease:
    lease = store.acquire_lease("node-a", "token-a", LONG)
    assert lease is not None
    store.sync_jobs(
        lease, [JobSync(name=j, fingerprint=FP, next_due=None) for j in jobs], loaded_at
    )
    return lease


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the store's file, for looking at what the store wrote."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as conn:
        yield conn


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def manual_store(tmp_path: Path, clock: ManualClock) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "state.db", clock=clock)
    yield store
    store.close()


# -- connection setup --------------------------------------------------------------------------


def test_pragmas_took_effect_on_the_store_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db", busy_timeout_ms=4321)
    try:
        # Per-connection pragmas (synchronous, busy_timeout) can only be seen on the store's own
        # connection, so this looks through the private accessor on purpose.
        with store._read() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 4321
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.isolation_level is None  # autocommit: transactions are ours
            assert not conn.in_transaction
    finally:
        store.close()
    with raw(tmp_path / "state.db") as other:  # WAL is a property of the file
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "state.db"
    old = os.umask(0o022)  # a typical permissive umask must not leak into our files
    try:
        store = SQLiteStore(path)
        store.set_paused("alpha", True)  # a write, so the -wal and -shm files exist
        try:
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            for name in ("state.db", "state.db-wal", "state.db-shm"):
                assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        finally:
            store.close()
    finally:
        os.umask(old)


def test_existing_directory_and_file_modes_are_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    first = SQLiteStore(shared / "state.db")  # an existing database (an empty file is refused)
    first.job_states()
    first.close()
    (shared / "state.db").chmod(0o640)
    store = SQLiteStore(shared / "state.db")
    try:
        store.job_states()
    finally:
        store.close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750
    assert stat.S_IMODE((shared / "state.db").stat().st_mode) == 0o640


def test_describe_names_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteStore(Path("rel") / "state.db").describe() == f"sqlite://{tmp_path}/rel/state.db"


def test_opening_is_lazy_and_reopening_keeps_the_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    assert not path.exists()  # nothing happens until the first call
    store.set_paused("alpha", True)
    store.close()
    again = SQLiteStore(path)
    try:
        assert again.job_states()["alpha"].paused
    finally:
        again.close()


def test_schema_2_is_migrated_to_claim_ready_runs_in_creation_order(tmp_path: Path) -> None:
    """Schema 3 orders the ready index by creation (seq) instead of run id: a database schema 2
    wrote gets the new index when a store opens it."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    store.job_states()
    store.close()
    with raw(path) as conn:  # the schema 2 index
        conn.execute("DROP INDEX runs_ready")
        conn.execute(
            """CREATE INDEX runs_ready ON runs (queue, not_before, created_at, run_id)
            WHERE state = 'queued'"""
        )
        conn.execute("PRAGMA user_version = 2")
    again = SQLiteStore(path)
    try:
        again.job_states()
    finally:
        again.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        columns = [row[2] for row in conn.execute("PRAGMA index_info(runs_ready)")]
        assert columns == ["queue", "not_before"]
        # Schema 7's chains table (sqlite/chains.py) came with the migration.
        assert conn.execute("SELECT count(*) FROM chains").fetchone()[0] == 0


def test_schema_3_gets_the_outbox_and_is_read_as_found_without_one(tmp_path: Path) -> None:
    """Schema 4 adds the outbox (sqlite/outbox.py): opening a schema 3 database migrates it; a
    read-only open of one leaves it as it is and reads an empty outbox."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    store.job_states()
    store.close()
    with raw(path) as conn:
        conn.execute("DROP TABLE outbox")
        conn.execute("DROP TABLE event_kinds")
        conn.execute("PRAGMA user_version = 3")
    reader = SQLiteStore(path, create=False)
    try:
        assert reader.events_due(10) == []
        assert (reader.outbox_stats().depth, reader.outbox_stats().dropped) == (0, 0)
    finally:
        reader.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    again = SQLiteStore(path)
    try:
        assert again.outbox_stats().depth == 0
    finally:
        again.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT value FROM counters WHERE name = 'outbox_dropped'").fetchone()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    store.job_states()
    store.close()
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer = SQLiteStore(path)
    with pytest.raises(StoreError, match="schema version") as info:
        newer.job_states()
    assert not isinstance(info.value, StoreUnavailable)  # not worth retrying
    newer.close()


# -- errors --------------------------------------------------------------------------------------


def test_write_lock_held_too_long_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path, busy_timeout_ms=50)
    try:
        store.set_paused("alpha", True)
        with raw(path) as holder:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable) as info:
                store.set_paused("alpha", False)
            assert "\n" not in str(info.value)
            assert "busy" in str(info.value)
            assert store.job_states()["alpha"].paused  # WAL: reads go on under a writer
            holder.rollback()
        assert not store.set_paused("alpha", False).paused  # and the store recovers by itself
    finally:
        store.close()


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_unopenable_path_is_store_unavailable(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "state.db" if where == "under-a-file" else tmp_path
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable) as info:
        store.job_states()
    assert "\n" not in str(info.value)
    store.close()


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    store.job_states()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.job_states()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_connection_never_crosses_fork(tmp_path: Path) -> None:
    """Opened before fork: the child is refused. Built but unused: the child opens its own."""
    opened = SQLiteStore(tmp_path / "opened.db")
    opened.job_states()
    unused = SQLiteStore(tmp_path / "unused.db")
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only, never return into pytest
        code = 0
        try:
            opened.job_states()
            code = 1
        except StoreError:
            pass
        try:
            unused.set_paused("alpha", True)
            unused.close()
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert opened.job_states() == {}  # the parent's connection is unharmed
    opened.close()
    assert unused.job_states()["alpha"].paused
    unused.close()


# -- the guard table ---------------------------------------------------------------------------


def test_expired_guards_are_pruned_and_the_watermark_still_refuses(
    manual_store: SQLiteStore, clock: ManualClock, tmp_path: Path
) -> None:
    lease = leader_of(manual_store, ("alpha",), T0 - LONG)
    first = T0 - 30 * MINUTE
    [result] = manual_store.dispatch(lease, [item("alpha", first, guard_ttl=MINUTE)])
    assert result.status is DispatchStatus.QUEUED
    assert (
        manual_store.dispatch(lease, [item("alpha", first)])[0].status is DispatchStatus.DUPLICATE
    )
    clock.advance(120)
    [later] = manual_store.dispatch(lease, [item("alpha", T0 + MINUTE)])  # prunes as a side effect
    assert later.status is DispatchStatus.QUEUED
    with raw(tmp_path / "state.db") as conn:
        guarded = [row[0] for row in conn.execute("SELECT slot FROM guards")]
    assert guarded == [to_micros(T0 + MINUTE)]
    [again] = manual_store.dispatch(lease, [item("alpha", first)])
    assert again.status is DispatchStatus.STALE  # the watermark alone protects the old slot


def test_fenced_dispatch_writes_nothing(manual_store: SQLiteStore, clock: ManualClock) -> None:
    """A fenced dispatch writes nothing at all: no guard, no run, no watermark move."""
    lease = leader_of(manual_store, ("alpha",), T0 - LONG)
    before = manual_store.job_states()
    clock.advance(LONG.total_seconds() + 1)
    with pytest.raises(Fenced):
        manual_store.dispatch(lease, [item("alpha", T0 - MINUTE)])
    assert manual_store.job_states() == before
    assert manual_store.live_runs() == []


# -- blocking claim --------------------------------------------------------------------------------


def test_blocking_claim_wakes_when_another_connection_commits(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    worker, leader = SQLiteStore(path), SQLiteStore(path)
    try:
        slot = leader.now().replace(microsecond=0) - timedelta(seconds=1)
        lease = leader_of(leader, ("alpha",), slot - LONG)
        got: list[Claim | None] = []
        thread = threading.Thread(
            target=lambda: got.append(worker.claim("w", ["default"], "tok-1", LONG, wait=30.0))
        )
        thread.start()
        # Not a synchronisation: whether the claim is already polling or not, it must get the run.
        time.sleep(0.1)
        [result] = leader.dispatch(lease, [item("alpha", slot)])
        thread.join(timeout=10)  # far below the 30 s wait: the commit woke the claim
        assert not thread.is_alive()
        [claim] = got
        assert claim is not None
        assert claim.run.run_id == result.run_id == slot_id("alpha", slot)
    finally:
        worker.close()
        leader.close()


def test_blocking_claim_wakes_on_a_commit_by_another_thread_of_the_same_store(
    tmp_path: Path,
) -> None:
    """One connection shared by threads: its own commits do not move data_version, yet wake it."""
    store = SQLiteStore(tmp_path / "state.db")
    try:
        slot = store.now().replace(microsecond=0) - timedelta(seconds=1)
        lease = leader_of(store, ("alpha",), slot - LONG)
        got: list[Claim | None] = []
        thread = threading.Thread(
            target=lambda: got.append(store.claim("w", ["default"], "tok-1", LONG, wait=30.0))
        )
        thread.start()
        time.sleep(0.1)  # not a synchronisation: either way the claim must get the run
        store.dispatch(lease, [item("alpha", slot)])
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert [c.run.run_id if c else None for c in got] == [slot_id("alpha", slot)]
    finally:
        store.close()


def test_threads_sharing_a_store_claim_every_run_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db", history=200)
    try:
        start = store.now().replace(microsecond=0) - LONG
        lease = leader_of(store, ("alpha",), start - LONG)
        items = [item("alpha", start + timedelta(seconds=k)) for k in range(100)]
        expected = sorted(r.run_id or "" for r in store.dispatch(lease, items))
        claimed: list[str] = []

        def work(n: int) -> None:
            while (
                claim := store.claim("w", ["default"], f"tok-{n}-{len(claimed)}", LONG, 0)
            ) is not None:
                claimed.append(claim.run.run_id)
                store.finish(
                    claim.run.run_id, claim.token, AttemptResult(outcome=Outcome.SUCCEEDED)
                )

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(claimed) == expected
    finally:
        store.close()


def test_two_manual_triggers_in_one_microsecond_get_distinct_ids(
    manual_store: SQLiteStore,
) -> None:
    first = manual_store.enqueue_manual("alpha", "default", "d", "allow", 1)
    second = manual_store.enqueue_manual("alpha", "default", "d", "allow", 1)
    assert first.run_id == f"alpha@{format_utc(T0)}~manual"
    assert second.run_id == f"alpha@{format_utc(T0 + timedelta(microseconds=1))}~manual"
    assert [r.run_id for r in manual_store.live_runs("alpha")] == [first.run_id, second.run_id]


def test_blocking_claim_wakes_when_a_delayed_run_becomes_ready(
    manual_store: SQLiteStore, clock: ManualClock
) -> None:
    """No commit happens while waiting: the claim wakes at the retry's ``not_before`` by itself."""
    lease = leader_of(manual_store, ("alpha",), T0 - LONG)
    manual_store.dispatch(lease, [item("alpha", T0 - MINUTE, max_attempts=2)])
    first = manual_store.claim("w", ["default"], "tok-1", LONG, 0)
    assert first is not None
    retry_at = T0 + timedelta(seconds=10)
    failed = AttemptResult(outcome=Outcome.FAILED, exit_code=1, retry_at=retry_at)
    manual_store.finish(first.run.run_id, "tok-1", failed)
    second = manual_store.claim("w", ["default"], "tok-2", LONG, wait=60.0)
    assert second is not None
    assert second.attempt == 2
    assert retry_at <= manual_store.now() < retry_at + timedelta(seconds=1)


def test_blocking_claim_returns_when_the_store_is_closed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    store.job_states()
    got: list[object] = []

    def claim() -> None:
        try:
            got.append(store.claim("w", ["default"], "t", LONG, wait=30.0))
        except StoreError:  # closed before the claim even started: just as prompt
            got.append("closed")

    thread = threading.Thread(target=claim)
    thread.start()
    time.sleep(0.1)  # most likely polling by now; either way the claim must end promptly
    store.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert got in ([None], ["closed"])


# -- real processes ------------------------------------------------------------------------------

# A worker or leader process driving the store, started as `python CHILD MODE DB ...`.
CHILD = r"""
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

from chronod.instants import from_micros
from chronod.store.base import AttemptResult, JobSync, Outcome, SlotDispatch
from chronod.store.sqlite import SQLiteStore

OVERLAP = {"alpha": "allow", "beta": "queue", "gamma": "skip"}


def claim_all(store, go):
    print("up", flush=True)
    deadline = time.monotonic() + 20
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.001)
    while True:
        token = os.urandom(8).hex()
        claim = store.claim(f"w{os.getpid()}", ["default"], token, timedelta(minutes=5), 0)
        if claim is None:
            return
        print("claimed", claim.run.run_id, flush=True)
        store.finish(claim.run.run_id, token, AttemptResult(outcome=Outcome.SUCCEEDED))


def churn(store, base, seed):
    lease = store.acquire_lease("crash-node", "crash-token", timedelta(minutes=5))
    if lease is None:
        sys.exit(4)
    jobs = [JobSync(name=name, fingerprint="fp", next_due=None) for name in OVERLAP]
    store.sync_jobs(lease, jobs, base)
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        states = store.job_states()
        items = [
            SlotDispatch(
                job=name, fingerprint="fp", slot=states[name].watermark + timedelta(seconds=k),
                next_due=states[name].watermark + timedelta(seconds=k + 1), queue="default",
                digest="d", overlap=overlap, max_attempts=2, guard_ttl=timedelta(days=1),
            )
            for name, overlap in OVERLAP.items()
            for k in range(1, rng.randint(2, 6))
        ]
        for result in store.dispatch(lease, items):
            if result.status.value in ("queued", "waiting"):
                print("ack", result.run_id, flush=True)
        for _ in range(rng.randint(0, 8)):
            token = os.urandom(8).hex()
            ttl = timedelta(milliseconds=rng.choice([50, 300_000]))
            claim = store.claim("crash-worker", ["default"], token, ttl, 0)
            if claim is None:
                break
            run_id, roll = claim.run.run_id, rng.random()
            if roll < 0.5:
                done = AttemptResult(outcome=Outcome.SUCCEEDED, output="x" * 100)
                store.finish(run_id, token, done)
            elif roll < 0.7:
                failed = AttemptResult(outcome=Outcome.FAILED, exit_code=1, retry_at=store.now())
                store.finish(run_id, token, failed)
            elif roll < 0.8:
                store.hand_back(run_id, token)
            elif roll < 0.9:
                store.heartbeat(run_id, token, timedelta(milliseconds=50))
            # else: abandoned; its lease expires and a later claim reaps it
        if rng.random() < 0.2:
            store.enqueue_manual("beta", "default", "d", "queue", 1)


def main():
    mode, path = sys.argv[1], Path(sys.argv[2])
    store = SQLiteStore(path, history=int(sys.argv[3]))
    if mode == "claim":
        claim_all(store, Path(sys.argv[4]))
    else:
        churn(store, from_micros(int(sys.argv[4])), int(sys.argv[5]))
    store.close()


main()
"""


def child(
    tmp_path: Path, *args: str, stdout: int | IO[str] = subprocess.PIPE
) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), *args], stdout=stdout, text=True, cwd=REPO, env=env
    )


@pytest.mark.process
def test_two_processes_claim_every_run_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    runs = 300
    store = SQLiteStore(path, history=runs)
    try:
        jobs = tuple(f"job{i}" for i in range(10))
        start = store.now().replace(microsecond=0) - timedelta(hours=2)
        lease = leader_of(store, jobs, start)
        items = [item(jobs[k % 10], start + timedelta(seconds=k + 1)) for k in range(runs)]
        results = store.dispatch(lease, items)
        expected = {r.run_id for r in results if r.run_id and r.status is DispatchStatus.QUEUED}
        assert len(expected) == runs
        go = tmp_path / "go"
        workers = [child(tmp_path, "claim", str(path), str(runs), str(go)) for _ in range(2)]
        for proc in workers:  # both are up and polling for the go file: they start together
            assert proc.stdout is not None
            assert proc.stdout.readline() == "up\n"
        go.touch()
        outputs = [w.communicate(timeout=60)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0]
        claimed = [line.split()[1] for out in outputs for line in out.splitlines()]
        assert sorted(claimed) == sorted(expected)  # every run once, none twice
        assert store.live_runs() == []
        attempts = [e.attempt for j in jobs for e in store.history(j, runs)]
        assert len(attempts) == runs
        assert set(attempts) == {1}
    finally:
        store.close()


def check_invariants(path: Path, acknowledged: set[str], history: int) -> None:
    """What must hold after a crash at any instant (looked at with a plain connection)."""
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        jobs = {
            name: (watermark, last_slot)
            for name, watermark, last_slot in conn.execute(
                "SELECT name, watermark, last_slot FROM jobs"
            )
        }
        for name, (watermark, last_slot) in jobs.items():
            assert last_slot is None or watermark >= last_slot, name
        guards = set(conn.execute("SELECT job, slot FROM guards"))
        assert all(slot <= jobs[job][0] for job, slot in guards)  # the watermark covers guards
        live = list(conn.execute("SELECT run_id, job, slot, manual, state FROM runs"))
        for run_id, job, slot, manual, _ in live:
            if not manual:
                assert (job, slot) in guards, f"live run {run_id} has no guard"
        for job in {job for _, job, _, _, state in live if state == RunState.WAITING.value}:
            # a waiting run is only ever held behind another active run of its job
            assert any(j == job and s != RunState.WAITING.value for _, j, _, _, s in live), job
        ended = [
            run_id
            for (run_id,) in conn.execute(
                "SELECT run_id FROM history WHERE status IS NULL OR status = 'accepted'"
            )
        ]
        assert len(ended) == len(set(ended)), "a run ended twice"
        assert not {run_id for run_id, *_ in live} & set(ended), "an ended run is still live"
        for job, count in conn.execute("SELECT job, count(*) FROM history GROUP BY job"):
            assert count <= history, job
        epoch = conn.execute("SELECT value FROM counters WHERE name = 'epoch'").fetchone()[0]
        lease = conn.execute("SELECT epoch FROM lease").fetchone()
        assert lease is None or lease[0] <= epoch
        # Durability: every dispatch the child saw committed is still there.
        guarded_ids = {slot_id(job, from_micros(slot)) for job, slot in guards}
        assert acknowledged <= guarded_ids, sorted(acknowledged - guarded_ids)[:5]


@pytest.mark.process
def test_sigkill_at_random_instants_leaves_a_consistent_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    history = 20
    base = SQLiteStore(path).now().replace(microsecond=0) - timedelta(days=1)
    rng = random.Random(20260301)
    acknowledged: set[str] = set()
    for iteration in range(15):
        log = tmp_path / f"child-{iteration}.log"
        with log.open("w") as out:
            proc = child(
                tmp_path,
                "churn",
                str(path),
                str(history),
                str(to_micros(base)),
                str(iteration),
                stdout=out,
            )
            deadline = time.monotonic() + 30
            while "ready" not in log.read_text():
                assert proc.poll() is None, f"child exited early with {proc.returncode}"
                assert time.monotonic() < deadline, "child never got ready"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.25))  # somewhere in the dispatch/claim/finish churn
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        lines = log.read_text().splitlines()
        # The last line may be cut by the kill; a cut "ack" line is not an acknowledgement.
        complete = lines if log.read_text().endswith("\n") else lines[:-1]
        acknowledged |= {line.split()[1] for line in complete if line.startswith("ack ")}
        check_invariants(path, acknowledged, history)
    assert acknowledged, "the children never dispatched anything"
    survivor = SQLiteStore(path, history=history)
    try:  # and the store carries on where the dead left it
        lease = survivor.acquire_lease("crash-node", "crash-token", LONG)
        assert lease is not None
        alpha = survivor.job_states()["alpha"]
        assert alpha.watermark is not None
        nxt = item("alpha", alpha.watermark + timedelta(seconds=1))
        [result] = survivor.dispatch(lease, [replace(nxt, fingerprint="fp")])
        assert result.status is DispatchStatus.QUEUED
        survivor.reap()
        assert survivor.claim("w", ["default"], "final", LONG, 0) is not None
    finally:
        survivor.close()


def test_opening_another_store_in_the_same_process_keeps_the_first_ones_locks(
    tmp_path: Path,
) -> None:
    """Regression: a second store's file preparation must not drop the first one's POSIX locks.

    Closing any descriptor of the database file releases all of this process's locks on it; a
    short-lived connection in another process then thinks it is the last user, checkpoints and
    deletes the WAL, and the first store's later writes vanish into an unlinked file.
    """
    path = tmp_path / "state.db"
    first = SQLiteStore(path)
    lease = first.acquire_lease("node-a", "token-a", timedelta(minutes=5))
    assert lease is not None
    second = SQLiteStore(path)
    second.leader()  # opens its connection in this process
    probe = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('SELECT count(*) FROM sqlite_master').fetchone(); c.close()"
    )
    subprocess.run([sys.executable, "-c", probe, str(path)], check=True, timeout=60)
    first.sync_jobs(lease, [JobSync(name="j", fingerprint="fp", next_due=None)], first.now())
    wal = Path(f"{path}-wal")
    assert wal.exists(), "the WAL was deleted under an open connection"
    reader = (
        "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
        "'SELECT count(*) FROM jobs').fetchone()[0])"
    )
    seen = subprocess.run(
        [sys.executable, "-c", reader, str(path)],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert seen == "1", "another process does not see the first store's write"
    second.close()
    first.close()
