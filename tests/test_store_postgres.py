"""PostgreSQL-only behaviour of :class:`chronod.store.postgres.store.PostgresStore` (the contract
is in ``test_store_contract.py``): URLs and redaction, the schema (created on first use,
versioned, never by a read-only open), the store's connection killed, a statement timeout, an
unreachable server, and waiting claims woken by NOTIFY instead of polling.

The tests use a database of their own on the server at 127.0.0.1:5432 (``postgres_db``), each a
fresh schema in it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from chronod.errors import (
    StoreConfigError,
    StoreDiskError,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from chronod.store import StoreSettings, open_store, redact_url
from chronod.store.base import DispatchStatus, ExternalRun, JobSync, OutboxStats
from chronod.store.postgres.schema import SCHEMA_VERSION, migrate
from chronod.store.postgres.store import PostgresStore
from chronod.store.postgres.url import parse_postgres_url
from tests.postgres_server import PostgresDatabase, PrivateServer, new_namespace
from tests.redis_server import free_port
from tests.test_store_contract import FP, SUCCESS, item, lead, run_to_end

MINUTE = timedelta(minutes=1)
LONG = timedelta(seconds=60)
PASSWORD = "s3cr3t-pa55"


@pytest.fixture
def namespace() -> str:
    return new_namespace()


@pytest.fixture
def store(postgres_db: PostgresDatabase, namespace: str) -> Iterator[PostgresStore]:
    opened = PostgresStore.from_url(postgres_db.url, namespace=namespace)
    yield opened
    opened.close()


def schema_exists(database: PostgresDatabase, namespace: str) -> bool:
    with database.connect() as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (namespace,)).fetchone()
    return row is not None


# -- URLs (no server needed) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{PASSWORD}@db:5432/jobs", "postgresql://app:***@db:5432/jobs"),
        (
            f"postgres://app@db/jobs?sslmode=verify-full&password={PASSWORD}",
            "postgres://app@db/jobs?sslmode=verify-full&password=***",
        ),
        ("postgresql://db/jobs", "postgresql://db/jobs"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert parse_postgres_url(url).redacted == shown


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"postgresql://app:{PASSWORD}@db:99999/jobs", "port"),
        (f"postgresql://app:{PASSWORD}@db/jobs#x", "'#'"),
        (f"postgresql:app:{PASSWORD}@db/jobs", "expected postgresql://"),
    ],
)
def test_bad_urls_are_refused_in_one_line_without_the_password(url: str, says: str) -> None:
    with pytest.raises(StoreConfigError) as caught:
        parse_postgres_url(url)
    message = str(caught.value)
    assert says in message
    assert PASSWORD not in message
    assert "\n" not in message


def test_a_namespace_that_cannot_be_a_schema_is_refused() -> None:
    with pytest.raises(StoreConfigError, match="namespace 'Bad-Name'"):
        parse_postgres_url("postgresql://db/jobs", "Bad-Name")


# -- the schema ------------------------------------------------------------------------------------


def test_a_read_only_open_never_creates_the_schema(
    postgres_db: PostgresDatabase, namespace: str, tmp_path: Any
) -> None:
    settings = StoreSettings(url=postgres_db.url, config_dir=tmp_path, namespace=namespace)
    reader = open_store(settings, create=False)
    try:
        assert reader.now() is not None  # store time needs no schema (`chronod status` asks)
        with pytest.raises(StoreMissing):
            reader.job_states()
    finally:
        reader.close()
    assert not schema_exists(postgres_db, namespace)
    writer = open_store(settings)
    try:
        assert writer.job_states() == {}
    finally:
        writer.close()
    assert schema_exists(postgres_db, namespace)
    reader = open_store(settings, create=False)
    try:
        assert reader.job_states() == {}
    finally:
        reader.close()


def schema_version(database: PostgresDatabase, namespace: str) -> tuple[int, bool]:
    """The schema's version, and whether it has the outbox table."""
    with database.connect() as conn:
        row = conn.execute(f'SELECT version FROM "{namespace}".schema_version').fetchone()
        found = conn.execute("SELECT to_regclass(%s)", (f'"{namespace}".outbox',)).fetchone()
    return int(row[0]), found[0] is not None


def test_a_version_1_schema_is_upgraded_in_place_and_keeps_its_rows(
    postgres_db: PostgresDatabase, namespace: str
) -> None:
    """Version 2 added the outbox and external runs (#14, #15). A version 1 schema, made by the
    statements the first release ran, is read as it is by a read-only open and upgraded in place
    by a writer: its rows stay (the job's last outcome makes the next success a recovery), and
    the new tables work."""
    with psycopg.connect(postgres_db.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f'CREATE SCHEMA "{namespace}"')
        conn.execute(f'SET search_path TO "{namespace}"')
        migrate(conn, namespace, "test", target=1)
        conn.execute(
            "INSERT INTO jobs (name, fingerprint, last_outcome) VALUES ('alpha', 'x', 'failed')"
        )
    assert schema_version(postgres_db, namespace) == (1, False)
    reader = PostgresStore.from_url(postgres_db.url, namespace=namespace, create=False)
    try:
        assert reader.job_states()["alpha"].last_outcome is not None
        assert (reader.events_due(10), reader.deliveries()) == ([], [])
        assert reader.outbox_stats() == OutboxStats(depth=0, dropped=0)
    finally:
        reader.close()
    assert schema_version(postgres_db, namespace) == (1, False)
    store = PostgresStore.from_url(postgres_db.url, namespace=namespace)
    try:
        base = store.now().replace(microsecond=0) - timedelta(hours=2)
        lease = lead(store, base)
        assert schema_version(postgres_db, namespace) == (SCHEMA_VERSION, True)
        store.set_chains(lease, [])  # version 4's chains table came with the upgrade
        store.set_event_kinds(lease, {"alpha": frozenset({"recovered"})})
        run_id = run_to_end(store, lease, base + MINUTE, SUCCESS)
        [event] = store.events_due(10)
        assert (event.kind, event.run.run_id) == ("recovered", run_id)
        outside = ExternalRun(
            run_id="beta@celery",
            job="beta",
            slot=base,
            attempt=1,
            epoch=lease.epoch,
            queue="default",
            try_no=0,
            executor="host:1:abc",
        )
        assert store.begin_external(outside)
        assert store.end_external(outside, SUCCESS)
        assert [r.run_id for r in store.history("beta", 5)] == ["beta@celery"]
    finally:
        store.close()


def test_the_schema_is_versioned_and_a_newer_one_refused(
    store: PostgresStore, postgres_db: PostgresDatabase, namespace: str
) -> None:
    store.now()
    with postgres_db.connect() as conn:
        row = conn.execute(f'SELECT version FROM "{namespace}".schema_version').fetchone()
        assert row == (SCHEMA_VERSION,)
        conn.execute(f'UPDATE "{namespace}".schema_version SET version = %s', (SCHEMA_VERSION + 1,))
    later = PostgresStore.from_url(postgres_db.url, namespace=namespace)
    try:
        with pytest.raises(StoreError, match="upgrade chronod"):
            later.now()
    finally:
        later.close()


# -- failures --------------------------------------------------------------------------------------


def test_a_killed_connection_is_replaced_and_nothing_runs_twice(
    store: PostgresStore, postgres_db: PostgresDatabase
) -> None:
    base = store.now().replace(microsecond=0) - timedelta(hours=1)
    lease = store.acquire_lease("node-a", uuid.uuid4().hex, LONG)
    assert lease is not None
    store.sync_jobs(lease, [JobSync(name="alpha", fingerprint=FP, next_due=base)], base)
    first = store.dispatch(lease, [item("alpha", base + MINUTE)])
    assert postgres_db.terminate() >= 1  # pg_terminate_backend of the store's connection
    again = store.dispatch(lease, [item("alpha", base + MINUTE), item("alpha", base + 2 * MINUTE)])
    assert [r.status for r in first + again] == [
        DispatchStatus.QUEUED,
        DispatchStatus.DUPLICATE,
        DispatchStatus.QUEUED,
    ]
    assert len(store.live_runs("alpha")) == 2


def test_a_server_crash_and_restart_is_transient_and_loses_nothing_committed() -> None:
    """The server stops at once (no shutdown checkpoint) and comes back: meanwhile every call is
    StoreUnavailable in one line; afterwards the store goes on by itself, with every committed
    dispatch, claim and finish there and a repeated dispatch still a duplicate."""
    server = PrivateServer(free_port())
    try:
        server.init()
        server.start()
    except BaseException:
        server.stop()
        raise
    store = PostgresStore.from_url(server.url, namespace="chronod")
    try:
        base = store.now().replace(microsecond=0) - timedelta(hours=1)
        lease = store.acquire_lease("node-a", uuid.uuid4().hex, LONG)
        assert lease is not None
        store.sync_jobs(lease, [JobSync(name="alpha", fingerprint=FP, next_due=base)], base)
        run_to_end(store, lease, base + MINUTE, SUCCESS)
        [queued_run] = store.dispatch(lease, [item("alpha", base + 2 * MINUTE)])
        server.crash()
        with pytest.raises(StoreUnavailable) as caught:
            store.dispatch(lease, [item("alpha", base + 3 * MINUTE)])
        assert "\n" not in str(caught.value)
        server.start()
        server.wait_ready()
        again = store.dispatch(lease, [item("alpha", base + 2 * MINUTE)])
        assert [r.status for r in again] == [DispatchStatus.DUPLICATE]
        assert [r.run_id for r in store.live_runs("alpha")] == [queued_run.run_id]
        assert [e.state.value for e in store.history("alpha", 10)] == ["succeeded"]
        claim = store.claim("w1", ["default"], uuid.uuid4().hex, LONG, 0)
        assert claim is not None
        assert claim.run.run_id == queued_run.run_id
    finally:
        store.close()
        server.stop()


def test_a_statement_timeout_is_transient_and_the_store_goes_on(
    postgres_db: PostgresDatabase, namespace: str
) -> None:
    url = postgres_db.url + "?options=-c%20statement_timeout%3D200"
    store = PostgresStore.from_url(url, namespace=namespace)
    try:
        assert store.acquire_lease("node-a", uuid.uuid4().hex, LONG) is not None
        with postgres_db.connect() as blocker, blocker.transaction():
            blocker.execute(f'LOCK TABLE "{namespace}".lease IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(StoreUnavailable) as caught:
                store.leader()
        assert "cancel" in str(caught.value)
        assert "\n" not in str(caught.value)
        leader = store.leader()
        assert leader is not None
        assert leader.node == "node-a"
    finally:
        store.close()


def test_an_unreachable_server_is_one_line_without_the_password(namespace: str) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/jobs?connect_timeout=2"
    store = PostgresStore.from_url(url, namespace=namespace)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.now()
    finally:
        store.close()
    message = str(caught.value)
    assert PASSWORD not in message
    assert "\n" not in message
    assert "app:***@" in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{PASSWORD}%zz@127.0.0.1:{{port}}/jobs",  # libpq quotes the bad token
        f"postgresql://app@127.0.0.1:{{port}}/jobs?password={PASSWORD}%zz",
    ],
)
def test_a_driver_error_never_shows_the_password(url: str, namespace: str) -> None:
    store = PostgresStore.from_url(url.format(port=free_port()), namespace=namespace)
    try:
        with pytest.raises(StoreError) as caught:
            store.now()
    finally:
        store.close()
    assert PASSWORD not in str(caught.value)
    assert "%zz" not in str(caught.value)


def test_a_full_disk_is_a_disk_error(store: PostgresStore) -> None:
    error = store._translated(pgerrors.DiskFull("could not extend file: No space left on device"))
    assert isinstance(error, StoreDiskError)
    assert "disk is full" in str(error)


# -- waiting claims --------------------------------------------------------------------------------


class CountingStore(PostgresStore):
    """A PostgreSQL store that counts its transactions (each reads store time once)."""

    transactions = 0

    def _store_time(self, conn: Any) -> int:
        self.transactions += 1
        return super()._store_time(conn)


def test_an_idle_claim_waits_for_a_notification_instead_of_polling(
    postgres_db: PostgresDatabase, namespace: str
) -> None:
    worker = CountingStore(parse_postgres_url(postgres_db.url, namespace), history=10, create=True)
    leader = PostgresStore.from_url(postgres_db.url, namespace=namespace)
    try:
        base = leader.now().replace(microsecond=0) - timedelta(hours=1)
        lease = leader.acquire_lease("node-a", uuid.uuid4().hex, LONG)
        assert lease is not None
        leader.sync_jobs(lease, [JobSync(name="alpha", fingerprint=FP, next_due=base)], base)
        assert worker.claim("w", ["default"], uuid.uuid4().hex, LONG, wait=1.0) is None
        # One look when it starts waiting (a look for expired attempts, the first minute's sweep
        # for malformed runs, the claim), not a poll every few milliseconds: nothing was
        # committed, so nothing woke it.
        assert worker.transactions <= 3, worker.transactions
        claimed: list[Any] = []
        waiting = threading.Thread(
            target=lambda: claimed.append(
                worker.claim("w", ["default"], uuid.uuid4().hex, LONG, wait=10.0)
            )
        )
        waiting.start()
        time.sleep(0.3)  # the scenario: the worker is already waiting when the run is queued
        queued_at = time.monotonic()
        leader.dispatch(lease, [item("alpha", base + MINUTE)])
        waiting.join(timeout=10)
        assert claimed
        assert claimed[0] is not None
        assert time.monotonic() - queued_at < 1.0  # woken by the commit, not a timeout
    finally:
        worker.close()
        leader.close()


def test_a_claim_quarantines_a_malformed_run_and_takes_the_next(
    store: PostgresStore, postgres_db: PostgresDatabase, namespace: str
) -> None:
    base = store.now().replace(microsecond=0) - timedelta(hours=1)
    lease = store.acquire_lease("node-a", uuid.uuid4().hex, LONG)
    assert lease is not None
    jobs = [JobSync(name=name, fingerprint=FP, next_due=base) for name in ("alpha", "beta")]
    store.sync_jobs(lease, jobs, base)
    store.dispatch(lease, [item("alpha", base + MINUTE), item("beta", base + 2 * MINUTE)])
    with postgres_db.connect() as conn:  # an instant no chronod writes: a forged record
        conn.execute(f"""UPDATE "{namespace}".runs SET created_at = -1 WHERE job = 'alpha'""")
    store._next_sweep = float("inf")  # the claim meets it, not the once-a-minute sweep
    claim = store.claim("w", ["default"], uuid.uuid4().hex, LONG, wait=0)
    assert claim is not None
    assert claim.run.job == "beta"
    (quarantined,) = store.drain_quarantined()
    assert quarantined.job == "alpha"
    assert "created_at" in quarantined.problem
    assert store.history("alpha", 5)[0].state.value == "quarantined"
