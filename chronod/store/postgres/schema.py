"""The PostgreSQL store's schema, and bringing a database to it.

Everything lives in one PostgreSQL schema, named by ``[chronod] namespace`` (default
``chronod``); the connection's ``search_path`` points at it, so the statements name bare tables.
The tables are those of the SQLite store (``chronod.store.sqlite.schema`` documents each column),
with PostgreSQL's types: instants are BIGINT microseconds since the Unix epoch, so that both SQL
stores decode rows alike (:mod:`chronod.store.sqlite.rows`); ``seq`` columns are identities.

``schema_version(version)``
    One row: the version of the tables (:data:`SCHEMA_VERSION`). A later chronod upgrades in place
    (``_MIGRATIONS[v]`` takes version ``v`` to ``v + 1``, in the one transaction that creates or
    upgrades, under an advisory lock so that processes starting together do it once). Nothing is
    ever dropped.
``guards(job, slot) PRIMARY KEY``
    The per-slot guard *is* the primary key: a second guard of one slot cannot be committed,
    whatever any transaction believed it read.
``lease(id = 1)``
    The current leader lease: the one row every fenced write reads in its own transaction.
``event_kinds``, ``outbox``, ``deliveries``, ``external`` (version 2)
    Notifications' outbox (:mod:`chronod.store.sqlite.outbox`, written with the run end that
    caused an event) and runs executed by another system (:mod:`chronod.store.sqlite.external`),
    as in SQLite's schema 4 and 5. A version 1 database gains them in place when opened.
``finishes`` (version 3)
    Each finish's answer for a day, for a client's retry (SQLite's schema 6).
``chains`` (version 4)
    Which jobs run after which (:mod:`chronod.store.sqlite.chains`; SQLite's schema 7).

A read-only open (``create=False``) never creates the schema: a missing one is
:class:`~chronod.errors.StoreMissing`.
"""

from __future__ import annotations

from typing import Any

from chronod.errors import StoreError

SCHEMA_VERSION = 4
OUTBOX_SCHEMA = 2  # the version that added event_kinds, outbox, deliveries and external

# Index i upgrades a schema from version i to i + 1 (version 0: nothing there yet). Every
# statement is idempotent.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS counters (
            name TEXT PRIMARY KEY,
            value BIGINT NOT NULL
        )""",
        "INSERT INTO counters (name, value) VALUES ('epoch', 0) ON CONFLICT DO NOTHING",
        """CREATE TABLE IF NOT EXISTS lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            token TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            node TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS jobs (
            name TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL DEFAULT '',
            watermark BIGINT,
            last_slot BIGINT,
            next_due BIGINT,
            paused INTEGER NOT NULL DEFAULT 0,
            last_outcome TEXT,
            last_outcome_at BIGINT,
            last_success_at BIGINT,
            missed BIGINT NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS guards (
            job TEXT NOT NULL,
            slot BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (job, slot)
        )""",
        "CREATE INDEX IF NOT EXISTS guards_expiry ON guards (expires_at)",
        """CREATE TABLE IF NOT EXISTS runs (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            job TEXT NOT NULL,
            slot BIGINT NOT NULL,
            manual INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'waiting', 'running')),
            queue TEXT NOT NULL,
            digest TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            created_at BIGINT NOT NULL,
            not_before BIGINT NOT NULL,
            started_at BIGINT,
            worker TEXT,
            token TEXT,
            lease_expires_at BIGINT
        )""",
        "CREATE INDEX IF NOT EXISTS runs_ready ON runs (queue, not_before, seq) "
        "WHERE state = 'queued'",
        "CREATE INDEX IF NOT EXISTS runs_job ON runs (job, state, created_at, seq)",
        "CREATE UNIQUE INDEX IF NOT EXISTS runs_token ON runs (token) WHERE token IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS runs_lease ON runs (lease_expires_at) WHERE state = 'running'",
        """CREATE TABLE IF NOT EXISTS history (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id TEXT NOT NULL,
            job TEXT NOT NULL,
            slot BIGINT NOT NULL,
            manual INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            queue TEXT NOT NULL,
            digest TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            created_at BIGINT NOT NULL,
            not_before BIGINT,
            started_at BIGINT,
            finished_at BIGINT,
            worker TEXT,
            exit_code BIGINT,
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
            seen_at BIGINT NOT NULL,
            running INTEGER NOT NULL,
            concurrency INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS presence (
            member TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('scheduler', 'worker')),
            seen_at BIGINT NOT NULL,
            stopped INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS schema_version (
            one INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1),
            version INTEGER NOT NULL
        )""",
    ),
    (  # version 2: notifications' outbox (#14) and external runs (#15)
        """CREATE TABLE IF NOT EXISTS event_kinds (
            job TEXT PRIMARY KEY,
            kinds TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS outbox (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            entry TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            not_before BIGINT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            done TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (not_before, seq)",
        "INSERT INTO counters (name, value) VALUES ('outbox_dropped', 0) ON CONFLICT DO NOTHING",
        """CREATE TABLE IF NOT EXISTS deliveries (
            channel TEXT PRIMARY KEY,
            last_ok_at BIGINT,
            last_error TEXT,
            last_error_at BIGINT
        )""",
        """CREATE TABLE IF NOT EXISTS external (
            run_id TEXT NOT NULL,
            try_no BIGINT NOT NULL,
            executor TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            ended INTEGER NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (run_id, try_no)
        )""",
        "CREATE INDEX IF NOT EXISTS external_expiry ON external (expires_at)",
    ),
    (  # version 3: each finish's answer, for a client's retry (SQLite's schema 6)
        """CREATE TABLE IF NOT EXISTS finishes (
            token TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            result TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS finishes_expiry ON finishes (expires_at)",
    ),
    (  # version 4: chains (SQLite's schema 7)
        """CREATE TABLE IF NOT EXISTS chains (
            upstream TEXT PRIMARY KEY,
            links TEXT NOT NULL
        )""",
    ),
)
_HAS_VERSION_TABLE = "SELECT to_regclass('schema_version') IS NOT NULL AS present"
_SET_VERSION = """INSERT INTO schema_version (one, version) VALUES (1, %s)
    ON CONFLICT (one) DO UPDATE SET version = excluded.version"""


def found_version(conn: Any) -> int:
    """The schema version in the connection's schema (0: no chronod tables there)."""
    if not conn.execute(_HAS_VERSION_TABLE).fetchone()["present"]:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row["version"])


def migrate(conn: Any, schema: str, where: str, target: int = SCHEMA_VERSION) -> None:
    """Create or upgrade the schema to ``target`` in one transaction (``conn`` autocommit); an
    earlier ``target`` makes the tables an older chronod made (the migration tests use it).

    The quoted schema name is created first; an advisory lock keyed on it makes processes that
    start together wait for the first one, then find the work done.
    """
    if found_version(conn) == target:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"chronod-schema:{schema}",))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        version = found_version(conn)
        if version > SCHEMA_VERSION:
            raise too_new(where, version)
        for statements in _MIGRATIONS[version:target]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(_SET_VERSION, (max(version, target),))


def existing_version(conn: Any, where: str) -> int:
    """For ``create=False``: the version found (0: none; the store's table reads then raise
    StoreMissing), nothing created or upgraded."""
    version = found_version(conn)
    if version > SCHEMA_VERSION:
        raise too_new(where, version)
    return version


def too_new(where: str, version: int) -> StoreError:
    return StoreError(
        f"PostgreSQL store {where} has schema version {version}; this chronod knows up to "
        f"{SCHEMA_VERSION} (upgrade chronod)"
    )
