"""Store faults under real ``chronod`` processes (issue 12).

* A full disk: the SQLite store on a 2 MiB tmpfs this test mounts (root only: CI runs as root),
  two daemons with embedded workers, the disk filled for about ten seconds, then freed. Every
  process survives, the failing writes are reported, and every slot within grace after the
  recovery runs exactly once. No traceback in any log.
* ``chronod run`` and ``chronod worker`` on a file that is not a usable chronod database: exit 1
  with one line that names the problem.
* A malformed run in the queue (both stores): a real worker quarantines it and runs the ones
  behind it, without crashing.

Every wait is a polled deadline (:func:`tests.procs.wait_until`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chronod.config import load_config
from chronod.instants import parse_utc
from chronod.store.base import Outcome
from chronod.store.keys import KeySpace
from chronod.tz import UTC
from tests.procs import CHRONOD, Processes, hold_for, wait_until, write_atomically
from tests.targets import NAMESPACE, Target
from tests.test_faults import BAD_FILES, make_bad_file

pytestmark = pytest.mark.process

STARTUP = 30.0  # generous: a loaded 2-core CI machine can take seconds to import and connect
FULL_FOR = 10.0  # seconds the disk stays full
GRACE = 40  # seconds: every slot of the outage is still within grace when it ends


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (requested before ``procs``, so it is unmounted after
    every process is gone)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the process tests as root)")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount not found")
    point = tmp_path / "disk"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    for size in (4096, 512, 1):  # the last few blocks too
        with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
            while True:
                handle.write(b"\0" * size)
    return filler


def executions(record: Path) -> list[tuple[str, datetime]]:
    """(run id, slot) of every execution :func:`tests.procs.record_run` recorded."""
    if not record.exists():
        return []
    found = []
    for line in record.read_text().splitlines():
        run_id = line.split()[0]
        found.append((run_id, parse_utc(run_id.split("@", 1)[1])))
    return found


def tracebacks(procs: Processes) -> list[str]:
    return [p.name for p in procs.started if "Traceback" in p.log_path.read_text()]


def test_a_full_disk_stops_nothing_for_good(
    tmp_path: Path, small_disk: Path, procs: Processes
) -> None:
    record = tmp_path / "runs.log"  # outside the small disk: job output must not need it
    config = tmp_path / "schedules.toml"
    lines = [
        "[chronod]",
        'lease = "2s"',
        "[defaults]",
        'timezone = "UTC"',
        'overlap = "allow"',
        f'grace = "{GRACE}s"',
        "[jobs.tick]",
        'every = "1s"',
        'call = "tests.procs:record_run"',
        f"args = [{json.dumps(str(record))}]",
    ]
    write_atomically(config, "\n".join(lines) + "\n")
    store = f"sqlite://{small_disk / 'state.db'}"
    first = procs.run(config, store, workers=1, name="first")
    first.wait_for_log(r"^leading: jobs loaded", timeout=STARTUP)
    second = procs.run(config, store, workers=1, name="second")
    second.wait_for_log(r"^worker started", timeout=STARTUP)
    daemons = [first, second]
    wait_until(lambda: len(executions(record)) >= 3, timeout=STARTUP, what="runs before the fill")

    marks = {d.name: d.last_index() for d in daemons}
    # Fold the WAL into the database and truncate it first: a WAL that keeps its blocks lets a
    # full disk take some writes still (chronod checkpoints and reuses it), which would make
    # this outage a partial one.
    with closing(sqlite3.connect(small_disk / "state.db", timeout=10)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = fill(small_disk)
    filled = datetime.now(UTC)
    wait_until(
        lambda: any(d.find(r"^store cannot write", after=marks[d.name]) for d in daemons),
        timeout=15,
        what="a daemon to report that the store cannot write",
        context=procs.logs,
    )
    status = subprocess.run(
        [*CHRONOD, "--config", str(config), "--store", store, "status"],
        capture_output=True,
        text=True,
        check=False,
        timeout=STARTUP,
    )
    assert status.returncode == 0, status.stderr
    assert "disk full" in status.stdout, status.stdout
    rest = FULL_FOR - (datetime.now(UTC) - filled).total_seconds()
    hold_for(
        lambda: all(d.alive() for d in daemons),
        seconds=max(rest, 0.0),
        what="both daemons alive while the disk is full",
        context=procs.logs,
    )
    filler.unlink()
    freed = datetime.now(UTC)

    # Everything resumes by itself: the slots of the outage (within grace) and after it run.
    until = freed + timedelta(seconds=8)
    wait_until(
        lambda: any(at >= until for _, at in executions(record)),
        timeout=GRACE,
        what="runs of slots after the disk was freed",
        context=procs.logs,
    )
    # Each daemon that reported the failures reports their end (the standby too: it hears of
    # writes through its keeper and its worker children).
    failed = [d for d in daemons if d.find(r"^store cannot write", after=marks[d.name])]
    for daemon in failed:
        daemon.wait_for_log(r"^store accepts writes again", after=marks[daemon.name], timeout=20)
    assert all(d.alive() for d in daemons), procs.logs()
    ran = executions(record)
    counts = Counter(run_id for run_id, _ in ran)
    assert not [r for r, n in counts.items() if n > 1], f"ran twice: {counts.most_common(3)}"
    slots = sorted(at for _, at in ran)
    start = filled.replace(microsecond=0) - timedelta(seconds=2)
    expected, at = [], start
    while at <= until:
        expected.append(at)
        at += timedelta(seconds=1)
    missing = [s for s in expected if s not in set(slots)]
    assert not missing, f"slots that never ran: {[s.isoformat() for s in missing]}"
    assert not tracebacks(procs), procs.logs()
    for daemon in daemons:  # no crash loop of the worker children
        assert not daemon.find(r"^worker child died"), daemon.tail()
    for daemon in daemons:
        daemon.term()
    assert [d.wait_exit(timeout=STARTUP) for d in daemons] == [0, 0]


# -- a file that is not a usable chronod database --------------------------------------------


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["run", "worker"])
def test_run_and_worker_on_a_bad_file_exit_1_with_one_line(
    tmp_path: Path, procs: Processes, kind: str, command: str
) -> None:
    path = tmp_path / "state.db"
    make_bad_file(path, kind)
    config = tmp_path / "schedules.toml"
    write_atomically(
        config, '[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "1h"\ncommand = "true"\n'
    )
    args = ["--config", str(config), "--store", f"sqlite://{path}", command]
    started = procs.spawn(command, args)
    assert started.wait_exit(timeout=STARTUP) == 1
    lines = started.log_path.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("chronod: error: SQLite store ")
    assert BAD_FILES[kind] in lines[0]


# -- a malformed run in the queue ------------------------------------------------------------


def poison(target: Target, run_id: str) -> None:
    """Give the live run a non-numeric epoch, as anyone with write access to the store could."""
    if target.server is None:
        with closing(sqlite3.connect(target.sqlite_path)) as conn:
            conn.execute("UPDATE runs SET epoch = 'abc' WHERE run_id = ?", (run_id,))
            conn.commit()
    else:
        target.server.client().hset(KeySpace(NAMESPACE).run(run_id), "epoch", "abc")


def test_a_malformed_run_is_quarantined_and_the_queue_keeps_flowing(
    tmp_path: Path, target: Target, procs: Processes
) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / "schedules.toml"
    write_atomically(
        config,
        f'[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "1h"\n'
        f'command = "echo $CHRONOD_RUN_ID >> {marker}"\n',
    )
    job = load_config(config).jobs["a"]
    store = target.open()
    try:
        runs = [store.enqueue_manual("a", "default", job.digest, "allow", 1) for _ in range(3)]
        poison(target, runs[0].run_id)
        worker = procs.worker(config, target.url, concurrency=1)
        # A job writes the marker before its worker records the outcome: wait for the records.
        wait_until(
            lambda: len(store.history("a", 10)) == 3,
            timeout=STARTUP,
            what="the malformed run and the two behind it to end",
            context=worker.tail,
        )
        history = {r.run_id: r.state for r in store.history("a", 10)}
    finally:
        store.close()
    assert marker.read_text().split() == [runs[1].run_id, runs[2].run_id]
    assert history == {
        runs[0].run_id: Outcome.QUARANTINED,
        runs[1].run_id: Outcome.SUCCEEDED,
        runs[2].run_id: Outcome.SUCCEEDED,
    }
    [line] = worker.find(r"^quarantined run ")
    assert runs[0].run_id in line.msg
    assert "epoch" in line.msg
    assert worker.alive()
    assert not worker.find(r"^worker child died")
    assert "Traceback" not in worker.log_path.read_text()
    history_cli = subprocess.run(
        [*CHRONOD, "--config", str(config), "--store", target.url, "history", "--job", "a"],
        capture_output=True,
        text=True,
        check=False,
        timeout=STARTUP,
    )
    assert history_cli.returncode == 0, history_cli.stderr
    assert "quarantined" in history_cli.stdout
    assert "reason: quarantined: epoch is not an integer" in history_cli.stdout
