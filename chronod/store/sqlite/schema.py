"""The SQLite store's schema, and bringing a database to it.

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
``event_kinds(job PK, kinds)``, ``outbox(seq AUTOINCREMENT, event_id UNIQUE, kind, entry,
created_at, not_before, attempts, done)`` (schema 4)
    Notification events written with the run end that caused them (``sqlite/outbox.py``);
    ``counters.outbox_dropped`` counts the events a full outbox dropped. ``deliveries(channel PK,
    last_ok_at, last_error, last_error_at)``: the last delivery per channel (schema 4 too).
``external(run_id, try_no) PK, executor, started_at, ended, expires_at`` (schema 5)
    Executions of runs by another system (:meth:`SQLiteStore.begin_external`, docs/celery.md);
    expired rows are deleted by every begin.
``finishes(token PK, run_id, status, result, expires_at)`` (schema 6)
    The answer each finish got and a digest of its result, for a day, so that a client's retry
    gets the same answer even after the history entry was trimmed (as Redis's ``token:`` hash);
    expired rows are deleted by every finish.
``chains(upstream PK, links)`` (schema 7)
    Which jobs run after which (:meth:`SQLiteStore.set_chains`, ``sqlite/chains.py``): a JSON
    array of links per upstream job, read by every run end.

Opened with ``create=False`` (commands that must not create state), the database file must exist
and is used at the schema version it has: nothing is created or migrated, and the tables of later
versions read as empty.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chronod.errors import StoreCorrupt, StoreError

SCHEMA_VERSION = 7
PRESENCE_SCHEMA = 2  # the version that added the presence table
OUTBOX_SCHEMA = 4  # the version that added event_kinds and outbox (sqlite/outbox.py)
EXTERNAL_SCHEMA = 5  # the version that added the external table
CHAINS_SCHEMA = 7  # the version that added the chains table (sqlite/chains.py)

CHRONOD_TABLES = frozenset({"counters", "lease", "jobs", "guards", "runs", "history", "workers"})
_TABLE_NAMES = r"""SELECT name FROM sqlite_master
    WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'"""


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
    (
        """CREATE TABLE IF NOT EXISTS event_kinds (
            job TEXT PRIMARY KEY,
            kinds TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            entry TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            not_before INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            done TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (not_before, seq)",
        "INSERT OR IGNORE INTO counters (name, value) VALUES ('outbox_dropped', 0)",
        """CREATE TABLE IF NOT EXISTS deliveries (
            channel TEXT PRIMARY KEY,
            last_ok_at INTEGER,
            last_error TEXT,
            last_error_at INTEGER
        ) WITHOUT ROWID""",
    ),
    (
        """CREATE TABLE IF NOT EXISTS external (
            run_id TEXT NOT NULL,
            try_no INTEGER NOT NULL,
            executor TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            ended INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (run_id, try_no)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS external_expiry ON external (expires_at)",
    ),
    (
        """CREATE TABLE IF NOT EXISTS finishes (
            token TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            result TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS finishes_expiry ON finishes (expires_at)",
    ),
    (
        """CREATE TABLE IF NOT EXISTS chains (
            upstream TEXT PRIMARY KEY,
            links TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
)


def check_identity(conn: sqlite3.Connection, path: Path, *, created: bool) -> None:
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
        raise _too_new(path, version)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION in one write transaction (several processes may race)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise _too_new(path, version)
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def existing_schema(conn: sqlite3.Connection) -> int:
    """For ``create=False``: the schema version as found (already vetted by check_identity);
    nothing is migrated."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _too_new(path: Path, version: int) -> StoreError:
    return StoreError(
        f"SQLite store {path} has schema version {version}; this chronod knows up to "
        f"{SCHEMA_VERSION} (upgrade chronod)"
    )
