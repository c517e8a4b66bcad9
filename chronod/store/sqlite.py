"""The embedded default store: one SQLite file shared by every chronod process on one host.

Concurrency model
-----------------
* **One connection per instance, opened lazily** by the first call, in the process making it. A
  connection must never cross a ``fork()`` (SQLite's POSIX locks belong to the process that took
  them), so build the store, or at least use it for the first time, *after* forking; using a
  connection opened by another process raises :class:`~chronod.errors.StoreError` instead of
  risking corruption.
* **Explicit transactions.** The connection is in autocommit mode (``isolation_level=None``): the
  driver never opens a transaction behind our back. Every read-check-write runs inside
  ``BEGIN IMMEDIATE`` … ``COMMIT`` (:meth:`SQLiteStore._write`), which takes the database's single
  write lock *before* reading, so two processes can never both see "not claimed yet". Store time is
  read after the lock is held, so waiting for the lock can never make "now" stale. Pure reads are
  plain autocommit statements (or one deferred read transaction when they need one snapshot).
* **Durability.** WAL + ``synchronous=FULL``: a commit is on disk when it returns, and a crash at
  any instant (SIGKILL, power loss) leaves the last committed state; readers never block the writer.
* **Threads.** The connection is shared by the threads of one process under an instance lock; a
  blocking :meth:`SQLiteStore.claim` releases it while it waits.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)
-----------------------------------------------------------
Instants are INTEGER microseconds since the Unix epoch (:func:`chronod.instants.to_micros`): exact,
sortable, and the same in every process.

``counters(name PK, value)``
    ``epoch``: the lease epoch; it only ever grows, even when the lease row is deleted.
``lease(id = 1, token, epoch, node, expires_at)``
    The current leader lease (at most one row).
``jobs(name PK, fingerprint, watermark, last_slot, next_due, paused, last_outcome, last_outcome_at,
last_success_at, missed)``
    Job state. ``active`` is not stored: it is ``COUNT(*)`` of the job's live runs, so it can never
    drift from the runs it counts.
``guards(job, slot) PK, expires_at``
    The per-slot guard: the primary key *is* the guard (see :meth:`SQLiteStore.dispatch`).
``runs(seq PK, run_id UNIQUE, job, slot, manual, state, queue, digest, epoch, attempt, max_attempts,
created_at, not_before, started_at, worker, token, lease_expires_at)``
    The live set (queued, waiting, running); a queued row *is* the queue message. Indexes: the ready
    queue ``(queue, not_before) WHERE state='queued'`` (schema 3; ties in creation order, by the
    ``seq`` every index ends with), per job ``(job, state, created_at, seq)``, attempt tokens
    (unique), attempt-lease expiry ``WHERE state='running'``.
``history(seq AUTOINCREMENT, run_id, …, outcome, finished_at, exit_code, output, error, token,
status)``
    One row per attempt end and per skipped/missed decision, trimmed to ``history`` rows per job.
    ``token``/``status`` are set only by :meth:`SQLiteStore.finish`, so a repeated finish returns
    the answer it got the first time.
``workers(worker PK, queues, seen_at, running, concurrency)``
    Worker heartbeats; rows older than a minute are deleted on every registration.
``presence(member PK, role, seen_at, stopped)`` (schema 2)
    Scheduler announcements and clean stops (:meth:`SQLiteStore.announce`); rows older than a
    minute are deleted on every announcement.

Opened with ``create=False`` (commands that must not create state), the database file must exist
and is used at the schema version it has: nothing is created or migrated, and the tables of later
versions read as empty.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from chronod.clock import Clock, SystemClock
from chronod.errors import (
    StoreCorrupt,
    StoreDiskError,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from chronod.instants import format_utc, from_micros, slot_id, to_micros
from chronod.store.base import (
    MAX_MICROS,
    OUTPUT_TAIL,
    UNREADABLE_INSTANT,
    AttemptResult,
    Claim,
    DispatchResult,
    DispatchStatus,
    Fenced,
    FinishStatus,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MalformedRecord,
    MissedSlots,
    Outcome,
    Overlap,
    Presence,
    Quarantined,
    Role,
    RunRecord,
    RunState,
    SlotDispatch,
    Store,
    WorkerInfo,
    lenient,
    overlap_reason,
    shown,
    superseded_reason,
)

SCHEMA_VERSION = 3
PRESENCE_SCHEMA = 2  # the version that added the presence table
MIN_SQLITE_VERSION = (3, 24, 0)  # UPSERT (ON CONFLICT DO UPDATE); no RETURNING (3.35) is used
DEFAULT_BUSY_TIMEOUT_MS = 5000
POLL_INTERVAL = 0.005  # seconds between cheap PRAGMA data_version checks in a blocking claim
WORKER_SEEN_WINDOW = timedelta(minutes=1)
GUARD_PRUNE_EXTRA = 64  # expired guards deleted per dispatch batch, beyond one per item
SWEEP_EVERY = 60.0  # seconds between two looks (per store instance) for malformed live runs

_MICROSECOND = timedelta(microseconds=1)
# Free space under which `chronod status` warns that writes are about to fail (bytes).
LOW_SPACE = 256 * 1024

CHRONOD_TABLES = frozenset({"counters", "lease", "jobs", "guards", "runs", "history", "workers"})
_TABLE_NAMES = r"""SELECT name FROM sqlite_master
    WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'"""

# Primary result codes (sqlite3.h) chronod tells apart, and the texts SQLite gives them (Python
# 3.10's exceptions carry only the text).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26
_CODE_BY_MESSAGE = (
    ("database is locked", SQLITE_BUSY),
    ("database table is locked", SQLITE_LOCKED),
    ("readonly database", SQLITE_READONLY),
    ("disk i/o error", SQLITE_IOERR),
    ("malformed", SQLITE_CORRUPT),
    ("disk is full", SQLITE_FULL),
    ("unable to open", SQLITE_CANTOPEN),
    ("not a database", SQLITE_NOTADB),
)
# os.link errors that mean "this file system has no hard links" (see _create_if_absent).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK})

# Index i upgrades a database from user_version i to i + 1. Every statement is idempotent, so a
# half-created schema (impossible inside one transaction, but cheap to be sure of) is completed.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "INSERT OR IGNORE INTO counters (name, value) VALUES ('epoch', 0)",
        """CREATE TABLE IF NOT EXISTS lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            token TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            node TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS jobs (
            name TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL DEFAULT '',
            watermark INTEGER,
            last_slot INTEGER,
            next_due INTEGER,
            paused INTEGER NOT NULL DEFAULT 0,
            last_outcome TEXT,
            last_outcome_at INTEGER,
            last_success_at INTEGER,
            missed INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS guards (
            job TEXT NOT NULL,
            slot INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (job, slot)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS guards_expiry ON guards (expires_at)",
        """CREATE TABLE IF NOT EXISTS runs (
            seq INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            job TEXT NOT NULL,
            slot INTEGER NOT NULL,
            manual INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'waiting', 'running')),
            queue TEXT NOT NULL,
            digest TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            not_before INTEGER NOT NULL,
            started_at INTEGER,
            worker TEXT,
            token TEXT,
            lease_expires_at INTEGER
        )""",
        """CREATE INDEX IF NOT EXISTS runs_ready
            ON runs (queue, not_before, created_at, run_id) WHERE state = 'queued'""",
        "CREATE INDEX IF NOT EXISTS runs_job ON runs (job, state, created_at, seq)",
        "CREATE UNIQUE INDEX IF NOT EXISTS runs_token ON runs (token) WHERE token IS NOT NULL",
        """CREATE INDEX IF NOT EXISTS runs_lease
            ON runs (lease_expires_at) WHERE state = 'running'""",
        """CREATE TABLE IF NOT EXISTS history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            job TEXT NOT NULL,
            slot INTEGER NOT NULL,
            manual INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            queue TEXT NOT NULL,
            digest TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            not_before INTEGER,
            started_at INTEGER,
            finished_at INTEGER,
            worker TEXT,
            exit_code INTEGER,
            output TEXT NOT NULL DEFAULT '',
            error TEXT,
            token TEXT,
            status TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS history_job ON history (job, seq)",
        "CREATE INDEX IF NOT EXISTS history_run ON history (run_id, seq)",
        """CREATE TABLE IF NOT EXISTS workers (
            worker TEXT PRIMARY KEY,
            queues TEXT NOT NULL,
            seen_at INTEGER NOT NULL,
            running INTEGER NOT NULL,
            concurrency INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        """CREATE TABLE IF NOT EXISTS presence (
            member TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('scheduler', 'worker')),
            seen_at INTEGER NOT NULL,
            stopped INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # Ready runs of one instant are claimed in creation order (seq, which every index ends
        # with), as the contract says, rather than by run id.
        "DROP INDEX IF EXISTS runs_ready",
        """CREATE INDEX IF NOT EXISTS runs_ready
            ON runs (queue, not_before) WHERE state = 'queued'""",
    ),
)

# -- statements ------------------------------------------------------------------------------------

_LEASE = "SELECT token, epoch, node, expires_at FROM lease WHERE id = 1"
_BUMP_EPOCH = "UPDATE counters SET value = value + 1 WHERE name = 'epoch'"
_EPOCH = "SELECT value FROM counters WHERE name = 'epoch'"
_PUT_LEASE = """INSERT OR REPLACE INTO lease (id, token, epoch, node, expires_at)
    VALUES (1, ?, ?, ?, ?)"""
_EXTEND_LEASE = "UPDATE lease SET expires_at = ? WHERE id = 1"
_DROP_LEASE = "DELETE FROM lease WHERE id = 1 AND token = ? AND epoch = ?"

_JOB_COLUMNS = """name, fingerprint, watermark, last_slot, next_due, paused, last_outcome,
    last_outcome_at, last_success_at, missed,
    (SELECT COUNT(*) FROM runs WHERE runs.job = jobs.name) AS active"""
_JOB = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE name = ?"
# The jobs named in ?1, each with whether it has a live run, looked up only for those in ?2.
_BATCH_JOBS = """SELECT name, fingerprint, watermark, last_slot, next_due, paused,
    CASE WHEN name IN (SELECT value FROM json_each(?2))
        THEN EXISTS (SELECT 1 FROM runs WHERE runs.job = jobs.name) ELSE 0 END AS active, missed
    FROM jobs WHERE name IN (SELECT value FROM json_each(?1))"""
_ALL_JOBS = f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY name"
# The columns of a job without state, as a row would hold them (name and active to be added).
_NO_JOB: dict[str, Any] = {
    "fingerprint": "",
    "watermark": None,
    "last_slot": None,
    "next_due": None,
    "paused": 0,
    "last_outcome": None,
    "last_outcome_at": None,
    "last_success_at": None,
    "missed": 0,
}
_BATCH_JOB_STATES = f"""SELECT {_JOB_COLUMNS} FROM jobs
    WHERE name IN (SELECT value FROM json_each(?))"""
_CREATE_JOB = """INSERT INTO jobs (name, fingerprint, watermark, next_due)
    VALUES (?, ?, ?, ?)"""
_REDEFINE_JOB = """UPDATE jobs SET fingerprint = ?, watermark = max(coalesce(watermark, ?), ?),
    next_due = ? WHERE name = ?"""
_RESET_JOB = """UPDATE jobs SET fingerprint = ?, watermark = ?, last_slot = NULL, next_due = ?,
    paused = (paused IS 1), missed = CASE WHEN typeof(missed) = 'integer' THEN missed ELSE 0 END
    WHERE name = ?"""
_TO_RETIRE = """SELECT name FROM jobs
    WHERE fingerprint != '' AND name NOT IN (SELECT value FROM json_each(?)) ORDER BY name"""
_RETIRE_JOB = "UPDATE jobs SET fingerprint = '' WHERE name = ?"
_ENSURE_JOB = "INSERT OR IGNORE INTO jobs (name) VALUES (?)"
_SET_PAUSED = "UPDATE jobs SET paused = ?, watermark = ? WHERE name = ?"
_SET_PROGRESS = "UPDATE jobs SET watermark = ?, last_slot = ?, next_due = ? WHERE name = ?"
_SET_ADVANCED = "UPDATE jobs SET missed = ?, watermark = ?, next_due = ? WHERE name = ?"
_SET_OUTCOME = """INSERT INTO jobs (name, last_outcome, last_outcome_at, last_success_at)
    VALUES (:job, :outcome, :at, :success_at)
    ON CONFLICT (name) DO UPDATE SET
        last_outcome = excluded.last_outcome,
        last_outcome_at = excluded.last_outcome_at,
        last_success_at = coalesce(excluded.last_success_at, jobs.last_success_at)"""

# Which (job, slot) pairs of a batch (a JSON list of [job, slot]) are guarded, and until when: one
# PK probe each.
_BATCH_GUARDS = """SELECT g.job, g.slot, g.expires_at FROM json_each(?) AS wanted
    JOIN guards AS g ON g.job = json_extract(wanted.value, '$[0]')
        AND g.slot = json_extract(wanted.value, '$[1]')"""
# A plain INSERT: the batch checked the guards under the same write lock, so a conflict here would
# be a bug, and it must fail loudly (rolling the batch back) rather than be ignored.
_INSERT_GUARD = "INSERT INTO guards (job, slot, expires_at) VALUES (?, ?, ?)"
_PRUNE_GUARDS = """DELETE FROM guards WHERE (job, slot) IN
    (SELECT job, slot FROM guards WHERE expires_at <= ? LIMIT ?)"""

_RUN_COLUMNS = """seq, run_id, job, slot, manual, state, queue, digest, epoch, attempt,
    max_attempts, created_at, not_before, started_at, worker, token, lease_expires_at"""
_INSERT_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest, epoch, attempt,
        max_attempts, created_at, not_before)
    VALUES (:run_id, :job, :slot, :manual, :state, :queue, :digest, :epoch, :attempt,
        :max_attempts, :created_at, :not_before)"""
# The same, positional, for the many runs one dispatch batch creates (cheaper to bind).
_INSERT_DISPATCHED_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest,
        epoch, attempt, max_attempts, created_at, not_before)
    VALUES (?, ?, ?, 0, ?, ?, ?, ?, 0, ?, ?, ?)"""
_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?"
_RUN_BY_TOKEN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE token = ? AND state = 'running'"
_RUN_WITH_TOKEN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ? AND token = ?"
_LIVE_RUNS = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at, seq"
_LIVE_RUNS_OF = f"SELECT {_RUN_COLUMNS} FROM runs WHERE job = ? ORDER BY created_at, seq"
_HAS_ACTIVE = "SELECT 1 FROM runs WHERE job = ? LIMIT 1"
_ACTIVE_RUNS = "SELECT COUNT(*) FROM runs WHERE job = ?"
_NEWEST_LIVE_RUN = "SELECT run_id, state FROM runs WHERE job = ? ORDER BY seq DESC LIMIT 1"
# The oldest ready run of one queue: an ordered seek in runs_ready. claim() asks each of its queues
# and takes the oldest answer, rather than `queue IN (...)`, which would sort every ready run.
_READY_IN_QUEUE = f"""SELECT {_RUN_COLUMNS} FROM runs
    WHERE state = 'queued' AND queue = ? AND not_before <= ?
    ORDER BY not_before, seq LIMIT 1"""
# When a blocking claim found nothing, the next instants at which something could become ready
# without another process committing: a delayed run's not_before, or an attempt lease to reap.
# Live runs that _live_record would refuse, for the sweep (SQLiteStore._sweep): values of the wrong
# type (SQLite keeps text written into an INTEGER column), instants out of range, and running
# runs without a token or attempt lease (never reaped). The Python decoding is the authority; this
# only finds candidates without reading every row into Python.
_MALFORMED_RUNS = f"""SELECT {_RUN_COLUMNS} FROM runs WHERE
    typeof(run_id) != 'text' OR typeof(job) != 'text' OR typeof(queue) != 'text'
    OR typeof(digest) != 'text' OR state NOT IN ('queued', 'waiting', 'running')
    OR typeof(slot) != 'integer' OR slot NOT BETWEEN 0 AND :max
    OR typeof(created_at) != 'integer' OR created_at NOT BETWEEN 0 AND :max
    OR typeof(not_before) != 'integer' OR not_before NOT BETWEEN 0 AND :max
    OR typeof(manual) != 'integer' OR manual NOT IN (0, 1)
    OR typeof(epoch) != 'integer' OR epoch < 0
    OR typeof(attempt) != 'integer' OR attempt < 0
    OR typeof(max_attempts) != 'integer' OR max_attempts < 0
    OR (started_at IS NOT NULL
        AND (typeof(started_at) != 'integer' OR started_at NOT BETWEEN 0 AND :max))
    OR (worker IS NOT NULL AND typeof(worker) != 'text')
    OR (state = 'running' AND (typeof(token) != 'text' OR typeof(lease_expires_at) != 'integer'))
    LIMIT 1000"""
_NEXT_READY_IN_QUEUE = """SELECT min(not_before) FROM runs
    WHERE state = 'queued' AND queue = ? AND not_before > ?"""
_NEXT_LEASE_EXPIRY = "SELECT min(lease_expires_at) FROM runs WHERE state = 'running'"
_START_ATTEMPT = """UPDATE runs SET state = 'running', attempt = attempt + 1, token = ?, worker = ?,
    started_at = ?, lease_expires_at = ? WHERE seq = ?"""
_EXTEND_ATTEMPT = """UPDATE runs SET lease_expires_at = ?
    WHERE run_id = ? AND token = ? AND state = 'running'"""
_REQUEUE = """UPDATE runs SET state = 'queued', not_before = ?, token = NULL, worker = NULL,
    started_at = NULL, lease_expires_at = NULL WHERE seq = ?"""
_HAND_BACK = """UPDATE runs SET state = 'queued', attempt = attempt - 1, token = NULL,
    worker = NULL, started_at = NULL, lease_expires_at = NULL
    WHERE run_id = ? AND token = ? AND state = 'running'"""
_EXPIRED_ATTEMPTS = f"""SELECT {_RUN_COLUMNS} FROM runs
    WHERE state = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at, seq"""
_DELETE_RUN = "DELETE FROM runs WHERE seq = ?"
# The job's oldest waiting run becomes queued; its not_before (slot or trigger time) is already
# past, so it is ready at once and keeps its place among older ready runs.
_PROMOTE_WAITING = """UPDATE runs SET state = 'queued' WHERE seq =
    (SELECT seq FROM runs WHERE job = ? AND state = 'waiting' ORDER BY created_at, seq LIMIT 1)"""
_RUN_ID_TAKEN = """SELECT 1 FROM runs WHERE run_id = :run_id
    UNION ALL SELECT 1 FROM history WHERE run_id = :run_id LIMIT 1"""
_QUEUE_DEPTHS = "SELECT queue, count(*) FROM runs WHERE state = 'queued' GROUP BY queue"

_HISTORY_COLUMNS = """seq, run_id, job, slot, manual, outcome, queue, digest, epoch, attempt,
    max_attempts, created_at, not_before, started_at, finished_at, worker, exit_code, output,
    error"""
_INSERT_HISTORY = """INSERT INTO history (run_id, job, slot, manual, outcome, queue, digest, epoch,
        attempt, max_attempts, created_at, not_before, started_at, finished_at, worker, exit_code,
        output, error, token, status)
    VALUES (:run_id, :job, :slot, :manual, :outcome, :queue, :digest, :epoch, :attempt,
        :max_attempts, :created_at, :not_before, :started_at, :finished_at, :worker, :exit_code,
        :output, :error, :token, :status)"""
_HISTORY = f"""SELECT {_HISTORY_COLUMNS} FROM history WHERE job = ?
    ORDER BY seq DESC LIMIT ?"""
_NEWEST_HISTORY_OF_RUN = f"""SELECT {_HISTORY_COLUMNS} FROM history WHERE run_id = ?
    ORDER BY seq DESC LIMIT 1"""
_FINISHED_WITH_TOKEN = """SELECT status, outcome, exit_code, output, error FROM history
    WHERE run_id = ? AND token = ? AND status IS NOT NULL ORDER BY seq DESC LIMIT 1"""
# Keep the newest N entries of a job: find the (N+1)-th newest and delete it and everything older.
# When the job has N or fewer entries the subquery is NULL and nothing matches.
_TRIM_HISTORY = """DELETE FROM history WHERE job = :job AND seq <=
    (SELECT seq FROM history WHERE job = :job ORDER BY seq DESC LIMIT 1 OFFSET :keep)"""

_PUT_WORKER = """INSERT OR REPLACE INTO workers (worker, queues, seen_at, running, concurrency)
    VALUES (?, ?, ?, ?, ?)"""
_FORGET_WORKERS = "DELETE FROM workers WHERE seen_at <= ?"
_WORKERS = """SELECT worker, queues, seen_at, running, concurrency FROM workers
    WHERE seen_at > ? ORDER BY seen_at DESC, worker"""

_PUT_PRESENCE = """INSERT OR REPLACE INTO presence (member, role, seen_at, stopped)
    VALUES (?, ?, ?, ?)"""
_FORGET_PRESENCE = "DELETE FROM presence WHERE seen_at <= ?"
_PRESENCE = """SELECT member, role, seen_at, stopped FROM presence
    WHERE seen_at > ? ORDER BY seen_at DESC, member"""


# -- small pure helpers ----------------------------------------------------------------------------


def _micros(delta: timedelta) -> int:
    return delta // _MICROSECOND


def _output_tail(text: str) -> str:
    """At most OUTPUT_TAIL bytes of UTF-8 from the end of ``text``, cut on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= OUTPUT_TAIL:
        return text
    return data[-OUTPUT_TAIL:].decode("utf-8", errors="ignore")


# -- decoding rows ---------------------------------------------------------------------------------
# SQLite stores whatever is written into a column (type affinity only converts what it can), so a
# row written by hand may hold text where chronod wrote an integer, a number too large for an
# instant, and so on. Decoding checks every field and raises MalformedRecord naming the first bad
# one; readers then show the row as quarantined and claim quarantines it (see chronod.store.base).

Row = Mapping[str, Any] | sqlite3.Row


def _integer(row: Row, name: str, low: int = 0, high: int | None = None) -> int:
    value = row[name]
    if type(value) is not int:
        raise MalformedRecord(f"{name} is not an integer ({shown(value)})")
    if value < low or (high is not None and value > high):
        raise MalformedRecord(f"{name} is out of range ({value})")
    return value


def _instant(row: Row, name: str) -> datetime:
    return from_micros(_integer(row, name, 0, MAX_MICROS))


def _optional_instant(row: Row, name: str) -> datetime | None:
    return None if row[name] is None else _instant(row, name)


def _text(row: Row, name: str) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise MalformedRecord(f"{name} is not text ({shown(value)})")
    return value


def _optional_text(row: Row, name: str) -> str | None:
    return None if row[name] is None else _text(row, name)


def _flag(row: Row, name: str) -> bool:
    return bool(_integer(row, name, 0, 1))


def _outcome(row: Row, name: str) -> Outcome:
    value = row[name]
    try:
        return Outcome(value)
    except ValueError:
        raise MalformedRecord(f"{name} is not an outcome ({shown(value)})") from None


def _run_state(row: Row, name: str) -> RunState:
    value = row[name]
    try:
        return RunState(value)
    except ValueError:
        raise MalformedRecord(f"{name} is not a run state ({shown(value)})") from None


def _job_state(row: Row) -> JobState:
    """A job row as read; a field that cannot be read reads as unset (the leader re-syncs a
    malformed row, see sync_jobs), so status and metrics keep answering."""
    outcome = lenient(_outcome, row, "last_outcome", None) if row["last_outcome"] else None
    return JobState(
        name=str(row["name"]),
        fingerprint=lenient(_text, row, "fingerprint", ""),
        watermark=lenient(_optional_instant, row, "watermark", None),
        last_slot=lenient(_optional_instant, row, "last_slot", None),
        next_due=lenient(_optional_instant, row, "next_due", None),
        paused=lenient(_flag, row, "paused", False),
        last_outcome=outcome,
        last_outcome_at=lenient(_optional_instant, row, "last_outcome_at", None),
        last_success_at=lenient(_optional_instant, row, "last_success_at", None),
        active=int(row["active"]),
        missed=lenient(_integer, row, "missed", 0),
    )


def _job_problem(row: Row) -> str | None:
    """What makes a job row unusable for the leader (None: nothing)."""
    try:
        _text(row, "fingerprint")
        for name in ("watermark", "last_slot", "next_due"):
            _optional_instant(row, name)
        _flag(row, "paused")
        _integer(row, "missed")
    except MalformedRecord as exc:
        return str(exc)
    return None


def _live_record(row: Row) -> RunRecord:
    """A live run, every field checked (raises MalformedRecord)."""
    return RunRecord(state=_run_state(row, "state"), **_run_columns(row))


def _history_record(row: Row) -> RunRecord:
    """A history entry, every field checked (raises MalformedRecord)."""
    return RunRecord(
        state=_outcome(row, "outcome"),
        finished_at=_optional_instant(row, "finished_at"),
        exit_code=None if row["exit_code"] is None else _integer(row, "exit_code", -(2**63)),
        output=_text(row, "output"),
        error=_optional_text(row, "error"),
        **_run_columns(row),
    )


def _run_columns(row: Row) -> dict[str, Any]:
    """The columns a live run and a history entry share, as RunRecord fields."""
    return {
        "run_id": _text(row, "run_id"),
        "job": _text(row, "job"),
        "slot": _instant(row, "slot"),
        "manual": _flag(row, "manual"),
        "queue": _text(row, "queue"),
        "digest": _text(row, "digest"),
        "epoch": _integer(row, "epoch"),
        "attempt": _integer(row, "attempt"),
        "max_attempts": _integer(row, "max_attempts"),
        "created_at": _instant(row, "created_at"),
        "not_before": _optional_instant(row, "not_before"),
        "started_at": _optional_instant(row, "started_at"),
        "worker": _optional_text(row, "worker"),
    }


def _readable(decode: Callable[[Row], RunRecord], row: Row) -> RunRecord:
    """``decode(row)``, or for a malformed row the quarantined record that stands for it."""
    try:
        return decode(row)
    except MalformedRecord as exc:
        return _unreadable(row, str(exc))


def _unreadable(row: Row, problem: str) -> RunRecord:
    """What can be read of a malformed run, as a quarantined record (chronod.store.base)."""
    keys = row.keys()
    error = f"unreadable record: {problem}"
    if "outcome" in keys and row["outcome"] == Outcome.QUARANTINED.value:
        error = lenient(_text, row, "error", error)  # quarantined by claim: says what was wrong
    return RunRecord(
        run_id=lenient(_text, row, "run_id", "?"),
        job=lenient(_text, row, "job", "?"),
        slot=lenient(_instant, row, "slot", UNREADABLE_INSTANT),
        manual=lenient(_flag, row, "manual", False),
        state=Outcome.QUARANTINED,
        queue=lenient(_text, row, "queue", ""),
        digest=lenient(_text, row, "digest", ""),
        epoch=lenient(_integer, row, "epoch", 0),
        attempt=lenient(_integer, row, "attempt", 0),
        max_attempts=lenient(_integer, row, "max_attempts", 0),
        created_at=lenient(_instant, row, "created_at", UNREADABLE_INSTANT),
        not_before=lenient(_optional_instant, row, "not_before", None),
        started_at=lenient(_optional_instant, row, "started_at", None),
        finished_at=lenient(_optional_instant, row, "finished_at", None)
        if "finished_at" in keys
        else None,
        worker=lenient(_optional_text, row, "worker", None),
        output=lenient(_text, row, "output", "") if "output" in keys else "",
        error=error,
    )


def _history_entry(
    run: Mapping[str, Any], outcome: Outcome, finished_at: int, **fields: Any
) -> dict[str, Any]:
    """Parameters for _INSERT_HISTORY: the run's columns, the outcome, and per-entry ``fields``."""
    entry: dict[str, Any] = {
        "exit_code": None,
        "output": "",
        "error": None,
        "token": None,
        "status": None,
        "started_at": None,
        "not_before": None,
        "worker": None,
    }
    entry.update(run)
    entry.update(outcome=outcome.value, finished_at=finished_at, **fields)
    return entry


def _create_if_absent(path: Path, busy_timeout_ms: int) -> bool:
    """Create the database (directory 0700, file 0600) with its schema unless it exists; True if
    this call created the file.

    The database is built under a scratch name and hard-linked into place, so the file at
    ``path`` never exists without chronod's schema: an empty (0-byte) file there is never one
    chronod is still creating, and is refused as damaged instead of silently starting afresh.
    The link fails if another process got there first (its database is used). On a file system
    without hard links the file is created empty in place, as before (two processes creating it
    at the same instant may then see each other's empty file and refuse it once).

    SQLite gives the ``-wal`` and ``-shm`` files the database file's permission bits, so creating
    the file ourselves with 0600 keeps all three private without touching the process-wide umask
    (which other threads, and job processes forked meanwhile, would inherit). Existing files and
    directories are left alone: an operator may have chosen group access deliberately.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.path.lexists(path):
        return False
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        _create_private(scratch)
        conn = sqlite3.connect(scratch, isolation_level=None, timeout=busy_timeout_ms / 1000)
        try:
            _configure(conn, busy_timeout_ms)
            _enable_wal(conn)
            _migrate(conn, scratch)
        finally:
            conn.close()  # the only connection: SQLite folds the WAL into the file and deletes it
        try:
            os.link(scratch, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return _create_private(path)
        return True
    finally:
        for name in (scratch.name, f"{scratch.name}-wal", f"{scratch.name}-shm"):
            with contextlib.suppress(OSError):
                os.unlink(scratch.with_name(name))


def _create_private(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True if this call created it."""
    # O_EXCL matters: closing *any* descriptor of a file drops every POSIX lock this process holds
    # on it, so opening and closing an existing database here would silently unlock the connections
    # other stores in this process have open; the next process to close its connection would then
    # believe it was the last one and delete the WAL under them. Only a file we just created
    # (which nobody in this process can have open yet) is ever closed here.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _is_empty_file(path: Path) -> bool:
    """``path`` is a 0-byte file with no WAL content: no database at all (see _create_if_absent).

    A 0-byte file beside a non-empty ``-wal`` is a database whose content is all in the WAL (a
    process died before the first checkpoint): that one is fine.
    """
    try:
        info = path.stat()
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size:
        return False
    try:
        return path.with_name(f"{path.name}-wal").stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _configure(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Connection settings that change nothing in the file (_enable_wal is the one that does)."""
    conn.row_factory = sqlite3.Row
    try:  # JSON1 is built in since 3.38 and enabled by every common distribution before that
        conn.execute("SELECT json_valid('[]')")
    except sqlite3.OperationalError:
        raise StoreError("SQLite store: this SQLite library lacks the JSON1 functions") from None
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def _enable_wal(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"SQLite store: journal_mode is {mode!r}, WAL could not be enabled")
    conn.execute("PRAGMA synchronous = FULL")


def _check_identity(conn: sqlite3.Connection, path: Path, *, created: bool) -> None:
    """Refuse a file that is not chronod's database, before anything is written to it.

    Runs before WAL mode is set: switching a foreign database's journal mode would change it.
    A file that is not a database at all (or is damaged in its first page) fails on the first
    read with SQLITE_NOTADB or SQLITE_CORRUPT, which the caller reports as corrupt.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {row[0] for row in conn.execute(_TABLE_NAMES)}
    if version == 0 and not tables:
        if created:
            return  # ours, created empty in place on a file system without hard links
        raise StoreCorrupt(
            f"SQLite store {path} is an empty SQLite database without chronod's tables, which "
            "chronod never leaves behind: restore it from a backup, or delete it to start "
            "afresh (job state and history are lost)"
        )
    missing = CHRONOD_TABLES - tables
    if version == 0 or missing:
        found = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
        raise StoreCorrupt(
            f"SQLite store {path} is a SQLite database but not chronod's (schema version "
            f"{version}, tables: {found or 'none'}): point the store URL at another file, or "
            "move this one aside"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"SQLite store {path} has schema version {version}; this chronod knows up to "
            f"{SCHEMA_VERSION} (upgrade chronod)"
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION in one write transaction (several processes may race)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {path} has schema version {version}; this chronod knows up to "
                f"{SCHEMA_VERSION} (upgrade chronod)"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _require_file(path: Path) -> None:
    """For ``create=False``: the database file exists (StoreMissing if not; other OSErrors, such
    as a directory the caller may not enter, are reported as they are)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise StoreMissing(f"SQLite store {path} does not exist") from None
    except OSError as exc:
        raise StoreUnavailable(
            f"SQLite store {path}: cannot open the database file ({exc.strerror})"
        ) from None


def _existing_schema(conn: sqlite3.Connection) -> int:
    """For ``create=False``: the schema version as found (already vetted by _check_identity);
    nothing is migrated."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _corrupt(path: Path, detail: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"SQLite store {path} is corrupt ({detail}): stop every chronod process using it, then "
        "restore it from a backup, or move it (with its -wal file) aside to start afresh (job "
        "state and history are lost)"
    )


def _result_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of ``exc`` (Python 3.11+ carries it; 3.10 has the text)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    message = str(exc).lower()
    for text, known in _CODE_BY_MESSAGE:
        if text in message:
            return known
    return None


# Dispatch results that name the slot's run id (a run or history entry exists, or existed, for it).
_NAMED_RESULTS = frozenset(
    {
        DispatchStatus.QUEUED,
        DispatchStatus.WAITING,
        DispatchStatus.SKIPPED,
        DispatchStatus.DUPLICATE,
    }
)


@dataclass
class _BatchJob:
    """A job's row as one dispatch batch sees and changes it (written back once per batch)."""

    fingerprint: str
    watermark: int | None
    last_slot: int | None
    next_due: int | None
    paused: bool
    active: bool
    guards: dict[int, int]  # those of the batch's slots of this job that are guarded: expiry
    dirty: bool = False
    # Why a slot of this job is skipped for overlap, once this batch created its active run.
    active_reason: str | None = None


@dataclass
class _DispatchPlan:
    """Decides the items of one dispatch batch in order and collects the rows to write."""

    epoch: int
    now: int
    guards: list[tuple[str, int, int]] = field(default_factory=list)
    runs: list[tuple[Any, ...]] = field(default_factory=list)  # _INSERT_DISPATCHED_RUN rows
    history: list[dict[str, Any]] = field(default_factory=list)
    # Skipped entries whose reason names the job's active run from before this batch: filled in
    # by SQLiteStore.dispatch with one lookup per job (skips are rare; the hot path pays nothing).
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    decided_at: datetime = field(init=False)
    # A batch's items share few distinct slots (1,000 jobs due at one second share one), and
    # converting an instant (microseconds, slot id text) cost more than deciding the item.
    _slots: dict[datetime, tuple[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decided_at = from_micros(self.now)

    def slot(self, instant: datetime) -> tuple[int, str]:
        """(microseconds, ISO text) of a slot instant."""
        known = self._slots.get(instant)
        if known is None:
            known = self._slots[instant] = (to_micros(instant), format_utc(instant))
        return known

    def decide(self, item: SlotDispatch, job: _BatchJob | None) -> DispatchResult:
        micros, text = self.slot(item.slot)
        run_id = f"{item.job}@{text}"  # instants.slot_id, with the formatting memoized
        status = self._status(item, job, micros, run_id)
        decided_at = self.decided_at
        if status is DispatchStatus.DUPLICATE and job is not None:
            # When the slot was first decided: its guard was written to expire guard_ttl later
            # (a retried batch carries the same guard_ttl), so a repeat answers as the first did.
            expiry = job.guards[micros]
            first = expiry - _micros(item.guard_ttl) if type(expiry) is int else self.now
            decided_at = from_micros(min(first, self.now))
        return DispatchResult(
            status=status,
            run_id=run_id if status in _NAMED_RESULTS else None,
            dispatched_at=decided_at,
        )

    def _status(
        self, item: SlotDispatch, job: _BatchJob | None, slot: int, run_id: str
    ) -> DispatchStatus:
        if job is None or not job.fingerprint or job.fingerprint != item.fingerprint:
            return DispatchStatus.UNKNOWN_JOB
        if slot > self.now:
            return DispatchStatus.EARLY
        if slot in job.guards:
            return DispatchStatus.DUPLICATE
        if job.watermark is not None and slot <= job.watermark:
            return DispatchStatus.STALE
        expires_at = self.now + _micros(item.guard_ttl)
        job.guards[slot] = expires_at
        self.guards.append((item.job, slot, expires_at))
        job.watermark = slot
        job.next_due = None if item.next_due is None else self.slot(item.next_due)[0]
        job.dirty = True
        if job.paused:
            return DispatchStatus.PAUSED
        if item.superseded_by is not None or (job.active and item.overlap == "skip"):
            run = {
                "run_id": run_id,
                "job": item.job,
                "slot": slot,
                "manual": 0,
                "queue": item.queue,
                "digest": item.digest,
                "epoch": self.epoch,
                "attempt": 0,
                "max_attempts": item.max_attempts,
                "created_at": self.now,
                "not_before": slot,
            }
            reason = job.active_reason
            if item.superseded_by is not None:
                reason = superseded_reason(item.superseded_by)
            entry = _history_entry(run, Outcome.SKIPPED, self.now, error=reason)
            self.history.append(entry)
            if reason is None:
                self.unexplained.append(entry)
            return DispatchStatus.SKIPPED
        waiting = job.active and item.overlap == "queue"
        state = RunState.WAITING if waiting else RunState.QUEUED
        self.runs.append(
            (
                run_id,
                item.job,
                slot,
                state.value,
                item.queue,
                item.digest,
                self.epoch,
                item.max_attempts,
                self.now,
                slot,
            )
        )
        job.active = True
        job.active_reason = overlap_reason(run_id, state.value)
        job.last_slot = slot
        return DispatchStatus.WAITING if waiting else DispatchStatus.QUEUED


class _Seen(NamedTuple):
    """What a claim that found nothing saw, so that its wait can tell when to look again."""

    commits: int  # the instance's own commit count
    data_version: int  # PRAGMA data_version: moves when another connection commits
    wake_at: int | None  # earliest delayed run or attempt-lease expiry, microseconds


@dataclass(frozen=True)
class _Tx:
    conn: sqlite3.Connection
    now: int  # store time, microseconds, read after the write lock was taken
    # Runs this transaction quarantined: reported (SQLiteStore.drain_quarantined) once committed.
    quarantined: list[Quarantined] = field(default_factory=list)


class SQLiteStore(Store):
    """:class:`~chronod.store.base.Store` on one SQLite file (WAL); see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        history: int = 100,
        clock: Clock | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        create: bool = True,
    ) -> None:
        self._path = Path(os.path.abspath(path))
        self._create = create  # False: the file must exist, and is neither created nor migrated
        self._schema = SCHEMA_VERSION  # as found, when not migrated
        self._history = max(int(history), 0)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()  # also wakes a claim blocked in another thread
        self._commits = 0  # write transactions committed through this instance
        self._quarantined: list[Quarantined] = []  # since the last drain_quarantined()
        self._next_sweep = 0.0  # monotonic: when claim next looks for malformed live runs

    # -- connection and transactions ---------------------------------------------------------------

    def describe(self) -> str:
        return f"sqlite://{self._path}"

    def _connection(self) -> sqlite3.Connection:
        if self._closed.is_set():
            raise StoreError(f"SQLite store {self._path} is closed")
        if self._conn is None:
            self._conn = self._open()
            self._pid = os.getpid()
        elif self._pid != os.getpid():
            raise StoreError(
                f"SQLite store {self._path} was opened in process {self._pid} and used in "
                f"{os.getpid()} after fork; open the store in the process that uses it"
            )
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StoreError(
                f"SQLite store: SQLite {sqlite3.sqlite_version} is too old; chronod needs "
                + ".".join(map(str, MIN_SQLITE_VERSION))
            )
        if self._create:
            try:
                created = _create_if_absent(self._path, self._busy_timeout_ms)
            except OSError as exc:
                raise StoreUnavailable(
                    f"SQLite store {self._path}: cannot create the database file ({exc.strerror})"
                ) from None
        else:
            _require_file(self._path)
            created = False
        if not created and _is_empty_file(self._path):
            raise StoreCorrupt(
                f"SQLite store {self._path} is an empty file (0 bytes), which chronod never "
                "leaves behind: restore it from a backup, or delete it to start afresh (job "
                "state and history are lost)"
            )
        # mode=rw: SQLite itself never creates the file (it may vanish after the check above).
        target = self._path if self._create else f"file:{quote(str(self._path))}?mode=rw"
        conn = sqlite3.connect(
            target,
            isolation_level=None,
            timeout=self._busy_timeout_ms / 1000,
            check_same_thread=False,  # shared by this process's threads under self._lock
            uri=not self._create,
        )
        try:
            _configure(conn, self._busy_timeout_ms)
            _check_identity(conn, self._path, created=created)
            if self._create:
                _enable_wal(conn)
                _migrate(conn, self._path)
            else:
                self._schema = _existing_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """SQLite's exceptions as chronod's: one line each, transient where retrying helps.

        Called with the instance lock held. After a full disk, the WAL is checkpointed: a WAL that
        grew to fill a small disk is then reused from its start, so writes resume without new
        space once the database file itself has room (otherwise they wait for an operator).
        """
        try:
            yield
        except sqlite3.Error as exc:
            code = _result_code(exc)
            if code == SQLITE_FULL:
                self._checkpoint()
            raise self._translated(exc, code) from exc

    def _translated(self, exc: sqlite3.Error, code: int | None) -> StoreError:
        path = self._path
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return StoreUnavailable(
                f"SQLite store {path} is busy: another process held its write lock "
                f"for more than {self._busy_timeout_ms} ms"
            )
        if code == SQLITE_CANTOPEN:
            return StoreUnavailable(f"SQLite store {path}: unable to open the database file")
        if code == SQLITE_FULL:
            return StoreDiskError(
                f"SQLite store {path}: the disk is full (database or disk is full); nothing is "
                "written until space is freed"
            )
        if code == SQLITE_IOERR:
            return StoreDiskError(f"SQLite store {path}: disk I/O error ({exc})")
        if code == SQLITE_READONLY:
            return StoreDiskError(
                f"SQLite store {path} cannot be written ({exc}): check the permissions of the "
                "file, its directory and its -wal and -shm files, and that the file system is "
                "mounted read-write"
            )
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return _corrupt(path, str(exc))
        return StoreError(f"SQLite store {path}: {' '.join(str(exc).split())}")

    def _checkpoint(self) -> None:
        """Best effort: copy the WAL into the database file so that the next writer restarts it."""
        conn = self._conn
        if conn is None or conn.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        """End the open transaction; a connection that cannot is dropped (reopened on next use)."""
        if not conn.in_transaction:
            return
        try:
            conn.rollback()
        except sqlite3.Error:
            # SQLite keeps the locks of other connections of this process on the file when one
            # closes (it defers closing the descriptor), so dropping this one is safe.
            self._conn = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Autocommit access for pure reads (each statement sees the latest commit)."""
        with self._lock, self._translated_errors():
            yield self._connection()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A deferred read transaction: several SELECTs that must see one consistent state."""
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                self._roll_back(conn)

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; store time is read once the write lock is held."""
        with self._lock, self._translated_errors():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                tx = _Tx(conn, to_micros(self._clock.now()))
                yield tx
                conn.execute("COMMIT")
                self._commits += 1  # data_version does not change for our own commits
            except BaseException:
                self._roll_back(conn)
                raise
            self._quarantined.extend(tx.quarantined)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
            # A connection inherited across fork belongs to the parent: closing it here could drop
            # the parent's locks, so the child only forgets it.
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def verify(self) -> None:
        """``PRAGMA quick_check``: every page of the file is read and its structure checked."""
        with self._read() as conn:
            found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        problems = [text for text in found if text != "ok"]
        if problems:
            more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
            raise _corrupt(self._path, " ".join(problems[0].split()) + more)

    def storage_problems(self) -> list[str]:
        try:
            fs = os.statvfs(self._path.parent)
        except OSError:
            return []
        problems = []
        if fs.f_flag & os.ST_RDONLY:
            problems.append(
                f"the file system holding {self._path} is mounted read-only: no state can be "
                "written (nothing is dispatched or recorded)"
            )
        free = fs.f_bavail * fs.f_frsize
        if free < LOW_SPACE:
            problems.append(
                f"the file system holding {self._path} has {free // 1024} KiB free: writes fail "
                "once it is full (disk full), and nothing is dispatched or recorded until space "
                "is freed"
            )
        return problems

    # -- clock -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock.now()

    # -- leader lease ------------------------------------------------------------------------------

    def acquire_lease(self, node: str, token: str, ttl: timedelta) -> Lease | None:
        with self._write() as tx:
            row = _lease_row(tx.conn.execute(_LEASE).fetchone())
            if row is not None and row["expires_at"] > tx.now:
                return _lease(row) if row["token"] == token else None
            tx.conn.execute(_BUMP_EPOCH)
            epoch = int(tx.conn.execute(_EPOCH).fetchone()[0])
            expires_at = tx.now + _micros(ttl)
            tx.conn.execute(_PUT_LEASE, (token, epoch, node, expires_at))
            return Lease(token=token, epoch=epoch, node=node, expires_at=from_micros(expires_at))

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        with self._write() as tx:
            if not _lease_is_current(tx, lease):
                return None
            expires_at = tx.now + _micros(ttl)
            tx.conn.execute(_EXTEND_LEASE, (expires_at,))
            return Lease(
                token=lease.token,
                epoch=lease.epoch,
                node=lease.node,
                expires_at=from_micros(expires_at),
            )

    def release_lease(self, lease: Lease) -> None:
        # Deleting our own row, expired or not, is always safe: a successor has a different token.
        with self._write() as tx:
            tx.conn.execute(_DROP_LEASE, (lease.token, lease.epoch))

    def leader(self) -> LeaderInfo | None:
        with self._read() as conn:
            row = _lease_row(conn.execute(_LEASE).fetchone())
            if row is None or row["expires_at"] <= to_micros(self._clock.now()):
                return None
            return LeaderInfo(
                node=row["node"], epoch=row["epoch"], expires_at=from_micros(row["expires_at"])
            )

    # -- job state ---------------------------------------------------------------------------------

    def sync_jobs(
        self, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        loaded = to_micros(loaded_at)
        with self._write() as tx:
            _fence(tx, lease)
            states: list[JobState] = []
            for job in jobs:
                next_due = None if job.next_due is None else to_micros(job.next_due)
                row = tx.conn.execute(_JOB, (job.name,)).fetchone()
                if row is None:
                    tx.conn.execute(_CREATE_JOB, (job.name, job.fingerprint, loaded, next_due))
                elif _job_problem(row) is not None:  # unreadable: start it afresh, as if new
                    tx.conn.execute(_RESET_JOB, (job.fingerprint, loaded, next_due, job.name))
                elif row["fingerprint"] != job.fingerprint:
                    tx.conn.execute(
                        _REDEFINE_JOB, (job.fingerprint, loaded, loaded, next_due, job.name)
                    )
                states.append(_job_state(tx.conn.execute(_JOB, (job.name,)).fetchone()))
            return states

    def retire_jobs(self, lease: Lease, keep: Sequence[str]) -> list[str]:
        with self._write() as tx:
            _fence(tx, lease)
            names = [row[0] for row in tx.conn.execute(_TO_RETIRE, (json.dumps(list(keep)),))]
            tx.conn.executemany(_RETIRE_JOB, [(name,) for name in names])
            return names

    def job_states(self) -> dict[str, JobState]:
        with self._read() as conn:
            return {row["name"]: _job_state(row) for row in conn.execute(_ALL_JOBS)}

    def set_paused(self, job: str, paused: bool) -> JobState:
        with self._write() as tx:
            tx.conn.execute(_ENSURE_JOB, (job,))
            row = tx.conn.execute(_JOB, (job,)).fetchone()
            watermark = row["watermark"] if type(row["watermark"]) is int else None
            if row["paused"] and not paused:  # resuming: nothing from the paused period runs
                watermark = tx.now if watermark is None else max(watermark, tx.now)
            tx.conn.execute(_SET_PAUSED, (int(paused), watermark, job))
            return _job_state(tx.conn.execute(_JOB, (job,)).fetchone())

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        """One transaction (one fsync) for the whole batch; each item is decided on its own.

        Under the write lock nothing else can change the batch's jobs and guards, so they are read
        once, every item is decided in order against that view (which each decision updates, so a
        slot repeated within the batch is a DUPLICATE), and the writes are applied in bulk.

        The guard is the ``guards`` primary key ``(job, slot)``: a slot's guard and its run commit
        together or not at all, so "guard exists" means "decided". Guards expire after
        ``guard_ttl`` and are pruned a bounded number at a time here; by then the watermark, moved
        to the slot by the same transaction that wrote the guard and never moved back, refuses the
        slot (STALE) on its own. Until then the guard is what tells a retry (DUPLICATE) from a slot
        that was never run (STALE).
        """
        with self._write() as tx:
            _fence(tx, lease)  # the lock is held for the whole batch: one check covers every item
            plan = _DispatchPlan(epoch=lease.epoch, now=tx.now)
            jobs = _load_batch_jobs(tx, items, plan)
            results = [plan.decide(item, jobs.get(item.job)) for item in items]
            _explain_skips(tx, plan.unexplained)
            tx.conn.executemany(_INSERT_GUARD, plan.guards)
            tx.conn.executemany(_INSERT_DISPATCHED_RUN, plan.runs)
            tx.conn.executemany(_INSERT_HISTORY, plan.history)
            tx.conn.executemany(
                _SET_PROGRESS,
                [
                    (job.watermark, job.last_slot, job.next_due, name)
                    for name, job in jobs.items()
                    if job.dirty
                ],
            )
            for name in {entry["job"] for entry in plan.history}:
                self._trim_history(tx, name)
            tx.conn.execute(_PRUNE_GUARDS, (tx.now, len(items) + GUARD_PRUNE_EXTRA))
            return results

    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        """One transaction (one fsync) for the batch, its rows written in bulk.

        After an outage of a large installation every job has missed slots: one transaction per
        job kept the leader recording them for minutes. Under the write lock nothing else changes
        the batch's jobs, so they are read once, each item is decided in order against that view
        (which it updates: a job named twice sees its first item's effect), and the history
        entries, job rows and history trims are written with one statement each.
        """
        with self._write() as tx:
            _fence(tx, lease)  # the lock is held for the whole batch: one check covers every item
            names = json.dumps(sorted({item.job for item in items}))
            rows = {row["name"]: dict(row) for row in tx.conn.execute(_BATCH_JOB_STATES, (names,))}
            for item in items:  # no state, nothing changes: the answer still counts its runs
                if item.job not in rows:
                    active = tx.conn.execute(_ACTIVE_RUNS, (item.job,)).fetchone()[0]
                    rows[item.job] = {**_NO_JOB, "name": item.job, "active": active}
            entries: list[dict[str, Any]] = []
            touched: set[str] = set()  # jobs whose fingerprint matched: their rows change
            states = [
                self._advance(tx.now, lease.epoch, rows, item, entries, touched) for item in items
            ]
            tx.conn.executemany(_INSERT_HISTORY, entries)
            tx.conn.executemany(
                _SET_ADVANCED,
                [
                    (rows[n]["missed"], rows[n]["watermark"], rows[n]["next_due"], n)
                    for n in touched
                ],
            )
            tx.conn.executemany(
                _TRIM_HISTORY, [{"job": name, "keep": self._history} for name in touched]
            )
            return states

    @staticmethod
    def _advance(
        now: int,
        epoch: int,
        rows: dict[str, dict[str, Any]],
        item: MissedSlots,
        entries: list[dict[str, Any]],
        touched: set[str],
    ) -> JobState:
        """Decide one item against ``rows`` (updated in place); queue its history entries."""
        job = item.job
        row = rows[job]
        if not row["fingerprint"] or row["fingerprint"] != item.fingerprint:
            return _job_state(row)
        if _job_problem(row) is not None:  # the leader re-syncs it (see _load_batch_jobs)
            return _job_state(row)
        watermark: int | None = row["watermark"]
        recorded = 0
        for slot in sorted(item.missed):
            micros = to_micros(slot)
            if watermark is None or micros > watermark:
                entries.append(_missed_entry(job, slot, epoch, now))
                watermark = micros
                recorded += 1
        # A client retry finds every named slot at or below the watermark the first call set:
        # it records nothing and must not count them again. (A call naming no slot cannot be
        # told from its repeat; it counts.)
        counted = item.missed_count if recorded or not item.missed else 0
        touched.add(job)
        row["missed"] += counted
        row["watermark"] = watermark
        row["next_due"] = None if item.next_due is None else to_micros(item.next_due)
        return _job_state(row)

    # -- manual runs -------------------------------------------------------------------------------

    def enqueue_manual(
        self, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        with self._write() as tx:
            created = tx.now
            # Two triggers in the same microsecond: the later one takes the next free microsecond,
            # so the id keeps its documented NAME@<instant>~manual form and stays unique.
            while _run_id_taken(tx, _manual_id(job, created)):
                created += 1
            active = tx.conn.execute(_HAS_ACTIVE, (job,)).fetchone() is not None
            state = RunState.WAITING if active and overlap != "allow" else RunState.QUEUED
            run = {
                "run_id": _manual_id(job, created),
                "job": job,
                "slot": created,
                "manual": 1,
                "state": state.value,
                "queue": queue,
                "digest": digest,
                "epoch": 0,
                "attempt": 0,
                "max_attempts": max_attempts,
                "created_at": created,
                "not_before": created,
                "started_at": None,
                "worker": None,
            }
            tx.conn.execute(_INSERT_RUN, run)
            return _live_record(run)

    # -- workers -----------------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta, wait: float
    ) -> Claim | None:
        """Claim in one ``BEGIN IMMEDIATE``; while nothing is ready, poll cheaply until ``wait``.

        Between attempts the loop only looks, every few milliseconds, at ``PRAGMA data_version``
        (which changes when another connection commits) and at this instance's own commit count
        (other threads sharing the connection), and claims again only when one of them changed or
        when the earliest delayed run or attempt lease it saw is due. Both are read inside the
        claim transaction, so a commit made just after it is never missed.
        """
        names = sorted(set(queues))
        deadline = self._clock.monotonic() + max(wait, 0.0)
        while True:
            claim, seen = self._claim_once(worker, names, token, ttl)
            if claim is not None or not self._wait_for_work(deadline, seen):
                return claim

    def _claim_once(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta
    ) -> tuple[Claim | None, _Seen]:
        with self._write() as tx:
            seen = _Seen(self._commits, 0, None)
            repeated = tx.conn.execute(_RUN_BY_TOKEN, (token,)).fetchone()
            if repeated is not None and self._well_formed(tx, repeated):
                return _claim_of(dict(repeated)), seen  # a retried claim: the same claim again
            self._reap(tx)
            if self._clock.monotonic() >= self._next_sweep:
                self._sweep(tx)
            run = self._oldest_ready(tx, queues)
            if run is not None:
                return _claim_of(_start_attempt(tx, run, worker, token, ttl)), seen
            version = int(tx.conn.execute("PRAGMA data_version").fetchone()[0])
            return None, _Seen(self._commits, version, _next_wake(tx, queues))

    def _oldest_ready(self, tx: _Tx, queues: Sequence[str]) -> dict[str, Any] | None:
        """The oldest ready run of ``queues``; malformed ones met on the way are quarantined."""
        while True:
            ready = [
                dict(row)
                for queue in queues
                for row in tx.conn.execute(_READY_IN_QUEUE, (queue, tx.now))
            ]
            usable = [run for run in ready if self._well_formed(tx, run)]
            if usable:
                return min(usable, key=lambda r: (r["not_before"], r["seq"]))
            if not ready:
                return None

    def _well_formed(self, tx: _Tx, row: Row) -> bool:
        """Whether the live run ``row`` can be read; if not, it is quarantined."""
        try:
            _live_record(row)
        except MalformedRecord as exc:
            self._quarantine(tx, row, str(exc))
            return False
        return True

    def _sweep(self, tx: _Tx) -> None:
        """Quarantine malformed live runs that claim would never meet (never ready, never
        reaped): each would count as its job's active run forever."""
        self._next_sweep = self._clock.monotonic() + SWEEP_EVERY
        for row in tx.conn.execute(_MALFORMED_RUNS, {"max": MAX_MICROS}).fetchall():
            self._well_formed(tx, row)

    def _quarantine(self, tx: _Tx, row: Row, problem: str) -> None:
        """End a malformed live run as ``quarantined`` (see chronod.store.base)."""
        run = dict(row)
        job = run.get("job")
        entry = _history_entry(run, Outcome.QUARANTINED, tx.now, error=f"quarantined: {problem}")
        if isinstance(job, str):
            self._end_run(tx, run, entry)
        else:  # no job to update or release: keep the entry, under a name history can show
            entry["job"] = shown(job)
            tx.conn.execute(_INSERT_HISTORY, entry)
            tx.conn.execute(_DELETE_RUN, (run["seq"],))
        run_id = run.get("run_id")
        tx.quarantined.append(
            Quarantined(
                run_id=run_id if isinstance(run_id, str) else shown(run_id),
                job=job if isinstance(job, str) else shown(job),
                problem=problem,
            )
        )

    def drain_quarantined(self) -> list[Quarantined]:
        with self._lock:
            found, self._quarantined = self._quarantined, []
        return found

    def _wait_for_work(self, deadline: float, seen: _Seen) -> bool:
        """Sleep until something may have become claimable (True) or the deadline passed."""
        while True:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            if self._clock.wait(self._closed, min(POLL_INTERVAL, remaining)):
                return False  # closed meanwhile
            if seen.wake_at is not None and to_micros(self._clock.now()) >= seen.wake_at:
                return True
            with self._read() as conn:
                if self._commits != seen.commits:
                    return True
                if conn.execute("PRAGMA data_version").fetchone()[0] != seen.data_version:
                    return True

    def heartbeat(self, run_id: str, token: str, ttl: timedelta) -> bool:
        with self._write() as tx:
            updated = tx.conn.execute(_EXTEND_ATTEMPT, (tx.now + _micros(ttl), run_id, token))
            return updated.rowcount == 1

    def finish(self, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        with self._write() as tx:
            row = tx.conn.execute(_RUN_WITH_TOKEN, (run_id, token)).fetchone()
            if row is None or row["state"] != RunState.RUNNING.value:
                return _repeated_finish(tx, run_id, token, result)
            run = dict(row)
            retryable = result.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
            attempts_left = run["attempt"] < run["max_attempts"]
            retry_at = result.retry_at if retryable and attempts_left else None
            status = FinishStatus.ACCEPTED if retry_at is None else FinishStatus.RETRY
            entry = _history_entry(
                run,
                result.outcome,
                tx.now,
                exit_code=result.exit_code,
                output=_output_tail(result.output),
                error=result.error,
                token=token,
                status=status.value,
            )
            if retry_at is None:
                self._end_run(tx, run, entry)
            else:
                tx.conn.execute(_INSERT_HISTORY, entry)
                tx.conn.execute(_REQUEUE, (to_micros(retry_at), run["seq"]))
                self._trim_history(tx, run["job"])
            return status

    def hand_back(self, run_id: str, token: str) -> bool:
        with self._write() as tx:
            return tx.conn.execute(_HAND_BACK, (run_id, token)).rowcount == 1

    def reap(self) -> list[str]:
        with self._write() as tx:
            return self._reap(tx)

    def _reap(self, tx: _Tx) -> list[str]:
        reaped: list[str] = []
        for row in tx.conn.execute(_EXPIRED_ATTEMPTS, (tx.now,)).fetchall():
            run = dict(row)
            if not self._well_formed(tx, run):
                continue
            if run["attempt"] < run["max_attempts"]:
                tx.conn.execute(_REQUEUE, (tx.now, run["seq"]))
            else:
                self._end_run(tx, run, _history_entry(run, Outcome.LOST, tx.now, token=None))
            reaped.append(run["run_id"])
        return reaped

    def _end_run(self, tx: _Tx, run: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
        """Terminal outcome: history, job outcome fields, leave the live set, release a waiter."""
        outcome = Outcome(entry["outcome"])
        tx.conn.execute(_INSERT_HISTORY, entry)
        # An upsert: a manual run of a job the leader never loaded still leaves its outcome, in a
        # state with an empty fingerprint (as set_paused creates), which a later load treats as new.
        tx.conn.execute(
            _SET_OUTCOME,
            {
                "job": run["job"],
                "outcome": outcome.value,
                "at": tx.now,
                "success_at": tx.now if outcome is Outcome.SUCCEEDED else None,
            },
        )
        tx.conn.execute(_DELETE_RUN, (run["seq"],))
        tx.conn.execute(_PROMOTE_WAITING, (run["job"],))
        self._trim_history(tx, run["job"])

    def _trim_history(self, tx: _Tx, job: str) -> None:
        tx.conn.execute(_TRIM_HISTORY, {"job": job, "keep": self._history})

    def register_worker(self, info: WorkerInfo) -> None:
        # seen_at is store time: the caller's clock is never trusted for liveness.
        with self._write() as tx:
            tx.conn.execute(_FORGET_WORKERS, (tx.now - _micros(WORKER_SEEN_WINDOW),))
            tx.conn.execute(
                _PUT_WORKER,
                (
                    info.worker,
                    json.dumps(list(info.queues)),
                    tx.now,
                    info.running,
                    info.concurrency,
                ),
            )

    def workers(self) -> list[WorkerInfo]:
        with self._read() as conn:
            since = to_micros(self._clock.now()) - _micros(WORKER_SEEN_WINDOW)
            found = []
            for row in conn.execute(_WORKERS, (since,)):
                try:
                    queues = json.loads(row["queues"])
                    found.append(
                        WorkerInfo(
                            worker=_text(row, "worker"),
                            queues=tuple(str(queue) for queue in queues),
                            seen_at=_instant(row, "seen_at"),
                            running=_integer(row, "running"),
                            concurrency=_integer(row, "concurrency"),
                        )
                    )
                except (MalformedRecord, ValueError, TypeError):
                    continue  # a forged entry; real ones are rewritten every few seconds
            return found

    # -- presence ----------------------------------------------------------------------------------

    def announce(self, member: str, role: Role, *, stopped: bool = False) -> None:
        with self._write() as tx:
            tx.conn.execute(_FORGET_PRESENCE, (tx.now - _micros(WORKER_SEEN_WINDOW),))
            tx.conn.execute(_PUT_PRESENCE, (member, role, tx.now, int(stopped)))

    def presences(self) -> list[Presence]:
        with self._read() as conn:
            if self._schema < PRESENCE_SCHEMA:  # opened as found, written by an older chronod
                return []
            since = to_micros(self._clock.now()) - _micros(WORKER_SEEN_WINDOW)
            return [
                Presence(
                    member=row["member"],
                    role=row["role"],
                    seen_at=from_micros(row["seen_at"]),
                    stopped=bool(row["stopped"]),
                )
                for row in conn.execute(_PRESENCE, (since,))
            ]

    # -- reading -----------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord | None:
        with self._snapshot() as conn:
            live = conn.execute(_RUN, (run_id,)).fetchone()
            if live is not None:
                return _readable(_live_record, live)
            ended = conn.execute(_NEWEST_HISTORY_OF_RUN, (run_id,)).fetchone()
            return None if ended is None else _readable(_history_record, ended)

    def live_runs(self, job: str | None = None) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(_LIVE_RUNS) if job is None else conn.execute(_LIVE_RUNS_OF, (job,))
            return [_readable(_live_record, row) for row in rows]

    def history(self, job: str, limit: int) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(_HISTORY, (job, max(limit, 0)))
            return [_readable(_history_record, row) for row in rows]

    def queue_depths(self) -> dict[str, int]:
        with self._read() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(_QUEUE_DEPTHS)}


# -- transaction helpers (called with the write lock held) -----------------------------------------


def _lease(row: sqlite3.Row) -> Lease:
    return Lease(
        token=row["token"],
        epoch=int(row["epoch"]),
        node=row["node"],
        expires_at=from_micros(row["expires_at"]),
    )


def _lease_row(row: sqlite3.Row | None) -> sqlite3.Row | None:
    """The lease row, or None if there is none or it is malformed (then it counts as expired, and
    the next acquisition replaces it)."""
    if row is None:
        return None
    fields = (row["token"], row["epoch"], row["node"], row["expires_at"])
    if [type(value) for value in fields] != [str, int, str, int]:
        return None
    return row


def _lease_is_current(tx: _Tx, lease: Lease) -> bool:
    row = _lease_row(tx.conn.execute(_LEASE).fetchone())
    return (
        row is not None
        and row["token"] == lease.token
        and row["epoch"] == lease.epoch
        and row["expires_at"] > tx.now
    )


def _fence(tx: _Tx, lease: Lease) -> None:
    """Refuse a leader write unless ``lease`` is current at store time (raising rolls back)."""
    if not _lease_is_current(tx, lease):
        raise Fenced(f"lease epoch {lease.epoch} of {lease.node} is not the current lease")


def _load_batch_jobs(
    tx: _Tx, items: Sequence[SlotDispatch], plan: _DispatchPlan
) -> dict[str, _BatchJob]:
    """The batch's stored jobs, each with those of the batch's slots that are already guarded.

    ``active`` (does the job have a live run) is looked up only for jobs with an item whose
    overlap is not ``allow``: nothing else reads it, and it is an index probe per job.
    """
    names = json.dumps(sorted({item.job for item in items}))
    watched = json.dumps(sorted({item.job for item in items if item.overlap != "allow"}))
    jobs = {
        row[0]: _BatchJob(
            fingerprint=row[1],
            watermark=row[2],
            last_slot=row[3],
            next_due=row[4],
            paused=bool(row[5]),
            active=bool(row[6]),
            guards={},
        )
        for row in tx.conn.execute(_BATCH_JOBS, (names, watched))
        # A malformed row is left out: its items answer UNKNOWN_JOB and the leader re-syncs the
        # job, which rewrites the row (sync_jobs).
        if _job_problem(row) is None
    }
    wanted = json.dumps([[item.job, plan.slot(item.slot)[0]] for item in items])
    for name, slot, expires_at in tx.conn.execute(_BATCH_GUARDS, (wanted,)):
        if name in jobs:
            jobs[name].guards[slot] = expires_at
    return jobs


def _explain_skips(tx: _Tx, entries: Sequence[dict[str, Any]]) -> None:
    """Give each skipped entry its reason: the job's newest live run (created before the batch)."""
    reasons: dict[str, str] = {}
    for entry in entries:
        job = entry["job"]
        if job not in reasons:
            row = tx.conn.execute(_NEWEST_LIVE_RUN, (job,)).fetchone()
            reasons[job] = overlap_reason(str(row[0]), str(row[1])) if row else "overlap = skip"
        entry["error"] = reasons[job]


def _missed_entry(job: str, slot: datetime, epoch: int, now: int) -> dict[str, Any]:
    """The _INSERT_HISTORY parameters of a missed slot.

    advance() is not told the job's queue, digest or attempts: those stay empty for a missed slot.
    """
    micros = to_micros(slot)
    run = {
        "run_id": slot_id(job, slot),
        "job": job,
        "slot": micros,
        "manual": 0,
        "queue": "",
        "digest": "",
        "epoch": epoch,
        "attempt": 0,
        "max_attempts": 0,
        "created_at": now,
        "not_before": micros,
    }
    return _history_entry(run, Outcome.MISSED, now)


def _repeated_finish(tx: _Tx, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
    """The answer to a finish whose token is not running: a repeat or a stale result.

    A client retry (this token already recorded this very result) gets the first answer again;
    anything else (a reclaimed attempt's late result, a different result) is STALE.
    """
    done = tx.conn.execute(_FINISHED_WITH_TOKEN, (run_id, token)).fetchone()
    same = done is not None and (
        done["outcome"],
        done["exit_code"],
        done["output"],
        done["error"],
    ) == (result.outcome.value, result.exit_code, _output_tail(result.output), result.error)
    return FinishStatus(done["status"]) if same else FinishStatus.STALE


def _manual_id(job: str, created: int) -> str:
    return f"{job}@{format_utc(from_micros(created))}~manual"


def _run_id_taken(tx: _Tx, run_id: str) -> bool:
    return tx.conn.execute(_RUN_ID_TAKEN, {"run_id": run_id}).fetchone() is not None


def _start_attempt(
    tx: _Tx, run: dict[str, Any], worker: str, token: str, ttl: timedelta
) -> dict[str, Any]:
    expires_at = tx.now + _micros(ttl)
    tx.conn.execute(_START_ATTEMPT, (token, worker, tx.now, expires_at, run["seq"]))
    return {
        **run,
        "state": RunState.RUNNING.value,
        "attempt": run["attempt"] + 1,
        "token": token,
        "worker": worker,
        "started_at": tx.now,
        "lease_expires_at": expires_at,
    }


def _next_wake(tx: _Tx, queues: Sequence[str]) -> int | None:
    candidates = [tx.conn.execute(_NEXT_READY_IN_QUEUE, (q, tx.now)).fetchone()[0] for q in queues]
    candidates.append(tx.conn.execute(_NEXT_LEASE_EXPIRY).fetchone()[0])
    present = [c for c in candidates if type(c) is int]  # a malformed row's value is skipped
    return min(present) if present else None


def _claim_of(run: Mapping[str, Any]) -> Claim:
    return Claim(
        run=_live_record(run),
        token=run["token"],
        attempt=int(run["attempt"]),
        lease_expires_at=from_micros(run["lease_expires_at"]),
    )
