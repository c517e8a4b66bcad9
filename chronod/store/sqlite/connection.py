"""The SQLite store's file and connection: creating the database, the pragmas, transactions, and
SQLite's errors as chronod's.

Concurrency model
-----------------
* **One connection per instance, opened lazily** by the first call, in the process making it. A
  connection must never cross a ``fork()`` (SQLite's POSIX locks belong to the process that took
  them), so build the store, or at least use it for the first time, *after* forking; using a
  connection opened by another process raises :class:`~chronod.errors.StoreError` instead of
  risking corruption.
* **Explicit transactions.** The connection is in autocommit mode (``isolation_level=None``): the
  driver never opens a transaction behind our back. Every read-check-write runs inside
  ``BEGIN IMMEDIATE`` … ``COMMIT`` (:meth:`SQLiteConnection._write`), which takes the database's
  single write lock *before* reading, so two processes can never both see "not claimed yet".
  Store time is read after the lock is held, so waiting for the lock can never make "now" stale.
  Pure reads are plain autocommit statements (or one deferred read transaction when they need one
  snapshot).
* **Durability.** WAL + ``synchronous=FULL``: a commit is on disk when it returns, and a crash at
  any instant (SIGKILL, power loss) leaves the last committed state; readers never block the writer.
* **Threads.** The connection is shared by the threads of one process under an instance lock; a
  blocking :meth:`SQLiteStore.claim` releases it while it waits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from chronod.clock import Clock, SystemClock
from chronod.errors import (
    StoreCorrupt,
    StoreDiskError,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from chronod.instants import to_micros
from chronod.store.records import MAX_OUTBOX, Quarantined
from chronod.store.sqlite.schema import SCHEMA_VERSION, check_identity, existing_schema, migrate

MIN_SQLITE_VERSION = (3, 24, 0)  # UPSERT (ON CONFLICT DO UPDATE); no RETURNING (3.35) is used
DEFAULT_BUSY_TIMEOUT_MS = 5000

# Free space under which `chronod status` warns that writes are about to fail (bytes).
LOW_SPACE = 256 * 1024

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
            migrate(conn, scratch)
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


def corrupt(path: Path, detail: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"SQLite store {path} is corrupt ({detail}): stop every chronod process using it, then "
        "restore it from a backup, or move it (with its -wal file) aside to start afresh (job "
        "state and history are lost)"
    )


def result_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of ``exc`` (Python 3.11+ carries it; 3.10 has the text)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    message = str(exc).lower()
    for text, known in _CODE_BY_MESSAGE:
        if text in message:
            return known
    return None


@dataclass(frozen=True)
class Tx:
    """A write transaction: its connection, and what the statements in it need to know."""

    conn: sqlite3.Connection
    now: int  # store time, microseconds, read after the write lock was taken
    keep: int  # history entries kept per job
    outbox_limit: int = MAX_OUTBOX  # events the outbox holds (Store.outbox_limit)
    # Runs this transaction quarantined: reported (SQLiteStore.drain_quarantined) once committed.
    quarantined: list[Quarantined] = field(default_factory=list)


class SQLiteConnection:
    """The connection and transactions of a :class:`~chronod.store.sqlite.SQLiteStore` (its base
    class): one connection per instance, opened by the first call (see the module docstring)."""

    outbox_limit: int = MAX_OUTBOX  # Store.outbox_limit, which the transactions carry

    def __init__(
        self,
        path: Path,
        *,
        history: int,
        clock: Clock | None,
        busy_timeout_ms: int,
        create: bool,
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
            check_identity(conn, self._path, created=created)
            if self._create:
                _enable_wal(conn)
                migrate(conn, self._path)
            else:
                self._schema = existing_schema(conn)
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
            code = result_code(exc)
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
            return corrupt(path, str(exc))
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
    def _write(self) -> Iterator[Tx]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; store time is read once the write lock is held."""
        with self._lock, self._translated_errors():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                tx = Tx(conn, to_micros(self._clock.now()), self._history, self.outbox_limit)
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
            raise corrupt(self._path, " ".join(problems[0].split()) + more)

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
