"""The PostgreSQL store's connections, transactions and errors.

Concurrency model
-----------------
* **One connection per instance**, opened by the first call in the process making it (a
  connection never crosses a ``fork()``: a child forgets its parent's, never closes it, since
  closing would end the parent's session). The threads of one process share it under a lock.
* **Every method is one transaction at SERIALIZABLE isolation** (but a claim's, at READ
  COMMITTED: :meth:`~chronod.store.postgres.store.PostgresStore.claim` says why that is safe).
  PostgreSQL then guarantees that
  the committed transactions have the effect of running one at a time, which is what each
  read-check-write of the contract needs (the SQLite store gets the same from ``BEGIN
  IMMEDIATE``): two transactions can never both see "no guard", "lease current" or "not claimed
  yet" and both commit. A transaction PostgreSQL cannot fit into that order fails with a
  serialization failure (SQLSTATE 40001) or a deadlock (40P01) *and has had no effect*; it is
  run again here, a bounded number of times, with store time read afresh.
* **Store time** is ``clock_timestamp()`` on the server, read by the first statement of each
  transaction and used for every decision in it (a transaction's time is its snapshot's time).
  No host clock is ever consulted: hosts may disagree, the server is one.
* **Fencing**: every leader write reads the lease row in its own transaction (SERIALIZABLE makes
  a concurrent acquisition either see the write or abort one of the two).
* **Push**: transactions that may make a run claimable end with ``pg_notify`` on the store's
  channel; a claim that found nothing waits on a second connection that LISTENs there, so idle
  workers send nothing but the occasional look at a delayed run.

Errors
------
A lost connection (refused, terminated by ``pg_terminate_backend``, a server restart or a
failover) and a statement cancelled by ``statement_timeout`` are
:class:`~chronod.errors.StoreUnavailable` (transient: the caller retries; every method is safe
to repeat). A connection found dead by a transaction's first statement, before anything of the
method was sent, is replaced and the transaction run again at once. A full disk is
:class:`~chronod.errors.StoreDiskError`. Messages are one line and never contain the password.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row

from chronod.errors import StoreDiskError, StoreError, StoreMissing, StoreUnavailable
from chronod.store.postgres.schema import SCHEMA_VERSION, existing_version, found_version, migrate
from chronod.store.postgres.url import PostgresTarget
from chronod.store.records import MAX_OUTBOX, Quarantined

T = TypeVar("T")

CONNECT_TIMEOUT = 5  # seconds, unless the URL sets connect_timeout
IDLE_IN_TX_MS = 5000  # see _connect
CONFLICT_RETRIES = 30  # serialization failures and deadlocks: the transaction had no effect
LISTEN_SLICE = 0.5  # seconds a waiting claim blocks on notifications before checking for close
_NOW = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS now"
_CONFLICTS = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected)

Conn = psycopg.Connection[dict[str, Any]]


@dataclass
class Tx:
    """A transaction: its connection, and what the statements in it need to know."""

    conn: Conn
    now: int  # store time, microseconds, read by the transaction's first statement
    keep: int  # history entries kept per job
    outbox_limit: int = MAX_OUTBOX  # events the outbox holds (Store.outbox_limit)
    quarantined: list[Quarantined] = field(default_factory=list)
    # False: a claim's READ COMMITTED transaction (see PostgresStore.claim).
    serializable: bool = True

    def one(self, query: str, params: Any = None) -> dict[str, Any] | None:
        return self.conn.execute(query, params).fetchone()

    def all(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        return self.conn.execute(query, params).fetchall()

    def run(self, query: str, params: Any = None) -> int:
        """Execute a write; the number of rows it changed."""
        return self.conn.execute(query, params).rowcount


class _DeadAtStart(Exception):
    """The connection was found dead by a transaction's first statement (nothing was sent)."""


class PostgresConnection:
    """Connections and transactions of a :class:`~chronod.store.postgres.PostgresStore` (its
    base class): see the module docstring."""

    outbox_limit: int = MAX_OUTBOX  # Store.outbox_limit, which the transactions carry

    def __init__(self, target: PostgresTarget, *, history: int, create: bool) -> None:
        self._target = target
        self._history = max(int(history), 0)
        self._create = create
        self._schema_version = SCHEMA_VERSION
        self._conn: Conn | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener: Conn | None = None
        self._listen_lock = threading.Lock()
        self._channel = f"chronod:{target.schema}"
        self._quarantined: list[Quarantined] = []

    def describe(self) -> str:
        return f"{self._target.redacted} (schema {self._target.schema})"

    # -- connections -------------------------------------------------------------------------------

    def _connect(self) -> Conn:
        params: dict[str, Any] = {"application_name": "chronod"}
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(self._target.url):
            params["connect_timeout"] = CONNECT_TIMEOUT
        conn = psycopg.connect(self._target.url, autocommit=True, row_factory=dict_row, **params)
        try:
            conn.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(self._target.schema))
            )
            if "idle_in_transaction_session_timeout" not in self._target.url:
                # A process frozen (SIGSTOP, a VM pause) inside a transaction would hold its row
                # locks, the lease row's among them, and keep every other process waiting: the
                # server ends such a session instead. chronod never idles inside a transaction.
                conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TX_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> Conn:
        if self._closed.is_set():
            raise StoreError(f"PostgreSQL store {self.describe()} is closed")
        if self._conn is not None and self._pid != os.getpid():
            self._conn = None  # the parent's: forgotten, never closed (that would end its session)
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            try:
                if self._create:
                    migrate(conn, self._target.schema, self.describe())
                else:
                    self._schema_version = existing_version(conn, self.describe())
                # After migrate, which runs at READ COMMITTED: it waits for an advisory lock and
                # must then see what the process that held it created.
                conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
            except BaseException:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with suppress(psycopg.Error):
                conn.close()

    # -- transactions ------------------------------------------------------------------------------

    def _store_time(self, conn: Conn) -> int:
        """Store time in microseconds (the first statement of every transaction)."""
        row = conn.execute(_NOW).fetchone()
        assert row is not None
        return int(row["now"])

    def _transact(
        self,
        body: Callable[[Tx], T],
        *,
        notify: bool = False,
        schema: bool = True,
        atomic: bool = True,
        serializable: bool = True,
    ) -> T:
        """Run ``body`` in one SERIALIZABLE transaction, again after a conflict (no effect).

        ``schema=False``: the body reads no table (store time), so it also answers when a
        read-only open found no schema (``chronod status`` of a store nothing used yet).
        ``atomic=False``: a look that needs no transaction (autocommit statements, outside
        SERIALIZABLE's conflict tracking): only for reads whose answer is a hint.
        ``serializable=False``: READ COMMITTED, for a claim alone (its reasoning is in
        :meth:`~chronod.store.postgres.store.PostgresStore.claim`).
        """
        conflicts = 0
        reconnected = False
        while True:
            try:
                with self._lock, self._translated_errors():
                    return self._attempt(body, notify, schema, atomic, serializable)
            except _DeadAtStart as dead:
                cause = dead.__cause__
                if reconnected and isinstance(cause, psycopg.Error):
                    raise self._translated(cause) from cause
                reconnected = True
            except _Conflict:
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise StoreUnavailable(
                        f"PostgreSQL store {self.describe()}: {CONFLICT_RETRIES} serialization "
                        "conflicts in a row (too many processes writing the same rows)"
                    ) from None
                time.sleep(random.uniform(0, 0.002 * min(conflicts, 10)))

    def _attempt(
        self,
        body: Callable[[Tx], T],
        notify: bool,
        schema: bool,
        atomic: bool,
        serializable: bool,
    ) -> T:
        conn = self._connection()
        if schema and self._schema_version == 0:  # opened read-only before anything wrote here
            self._schema_version = found_version(conn)
            if self._schema_version == 0:
                raise StoreMissing(
                    f"PostgreSQL store {self.describe()} has no chronod schema (nothing used it)"
                )
        started = False
        conn.isolation_level = (
            psycopg.IsolationLevel.SERIALIZABLE
            if serializable
            else psycopg.IsolationLevel.READ_COMMITTED
        )
        try:
            with conn.transaction() if atomic else nullcontext():
                now = self._store_time(conn)
                started = True
                tx = Tx(conn, now, self._history, self.outbox_limit, serializable=serializable)
                result = body(tx)
                if notify:
                    conn.execute("SELECT pg_notify(%s, '')", (self._channel,))
        except _CONFLICTS:
            raise _Conflict() from None
        except psycopg.OperationalError as exc:
            self._drop()
            if not started:
                raise _DeadAtStart() from exc
            raise
        self._quarantined.extend(tx.quarantined)
        return result

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._drop()
            raise self._translated(exc) from exc

    def _translated(self, exc: psycopg.Error) -> StoreError:
        where = f"PostgreSQL store {self.describe()}"
        detail = self._target.scrubbed(_one_line(exc))
        if isinstance(exc, pgerrors.DiskFull):
            return StoreDiskError(f"{where}: the server's disk is full ({detail})")
        if isinstance(exc, pgerrors.QueryCanceled):
            return StoreUnavailable(f"{where}: a statement was cancelled ({detail})")
        if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
            return StoreUnavailable(f"{where}: the server is a read-only standby ({detail})")
        if isinstance(
            exc, pgerrors.InvalidCatalogName | pgerrors.InvalidAuthorizationSpecification
        ):
            return StoreError(f"{where}: {detail}")
        if isinstance(exc, psycopg.OperationalError | pgerrors.InsufficientResources):
            return StoreUnavailable(f"{where} is unreachable: {detail}")
        return StoreError(f"{where}: {detail}")

    # -- notifications -----------------------------------------------------------------------------

    def _listening(self) -> Conn:
        if self._listener is None or self._listener.closed:
            listener = self._connect()
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._listener = listener
        return self._listener

    def _prepare_to_wait(self) -> None:
        """LISTEN before a claim looks, so that a commit after its look is never missed."""
        if self._listen_lock.acquire(blocking=False):
            try:
                self._listening()
            except psycopg.Error:
                self._listener = None  # the claim itself reports an unreachable server
            finally:
                self._listen_lock.release()

    def _wait_for_notice(self, seconds: float) -> bool:
        """Block until a notification (True) or ``seconds`` pass (False); polls when another
        thread is listening or the listener is lost."""
        if seconds <= 0:
            return False
        if not self._listen_lock.acquire(blocking=False):
            self._closed.wait(min(seconds, 0.05))
            return True
        try:
            listener = self._listening()
            for _ in listener.notifies(timeout=seconds, stop_after=1):
                return True
            return False
        except psycopg.Error:
            self._listener = None
            self._closed.wait(min(seconds, 0.05))
            return True
        finally:
            self._listen_lock.release()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._drop()
        if self._listen_lock.acquire(timeout=2 * LISTEN_SLICE):
            try:
                listener, self._listener = self._listener, None
                if listener is not None and self._pid in (0, os.getpid()):
                    listener.close()
            finally:
                self._listen_lock.release()


class _Conflict(Exception):
    """A serialization failure or deadlock: the transaction had no effect; run it again."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
