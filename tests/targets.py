"""The store that process tests share with the ``chronod`` processes they start.

:class:`Target` names it (kind, URL) and reaches into it the way no product code may: guard
lookups, expiring a lease or an attempt as if its TTL had passed. The ``target`` fixture
(conftest) builds one per store kind.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from chronod.instants import to_micros
from chronod.store import StoreSettings, open_store
from chronod.store.base import Store
from chronod.store.keys import KeySpace
from tests.redis_server import RedisServer

NAMESPACE = "chronod"


@dataclass
class Target:
    """The store the processes share, and test-side access to it (reads, guards, leases)."""

    kind: str
    url: str
    directory: Path
    server: RedisServer | None

    def open(self) -> Store:
        return open_store(StoreSettings(url=self.url, config_dir=self.directory))

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url[len("sqlite://") :])

    def _sqlite(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)

    def guarded(self, job: str, slot: datetime) -> bool:
        """Whether the per-slot guard of (job, slot) exists."""
        if self.server is None:
            with closing(self._sqlite()) as conn:
                row = conn.execute(
                    "SELECT 1 FROM guards WHERE job = ? AND slot = ?", (job, to_micros(slot))
                ).fetchone()
            return row is not None
        key = KeySpace(NAMESPACE).guard(job, to_micros(slot))
        return bool(self.server.client().exists(key))

    def write_lock_free(self) -> bool:
        """SQLite: nobody holds the database's write lock (Redis, PostgreSQL: always true)."""
        if self.kind != "sqlite":
            return True
        conn = sqlite3.connect(self.sqlite_path, timeout=0.2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
        return True

    def expire_lease(self) -> None:
        """Make the stored lease expired, as if its TTL had passed (the holder must be dead)."""
        if self.server is None:
            conn = sqlite3.connect(self.sqlite_path, timeout=10, isolation_level=None)
            try:
                conn.execute("UPDATE lease SET expires_at = 0")
            finally:
                conn.close()
        else:
            client = self.server.client()
            if client.exists(KeySpace(NAMESPACE).lease):
                client.hset(KeySpace(NAMESPACE).lease, "expires", "0")

    def expire_attempt(self, run_id: str) -> None:
        """Make the running attempt's lease expired, as if its TTL had passed without heartbeats
        (its worker is dead or frozen). The next claim by any worker reaps it."""
        if self.server is None:
            conn = sqlite3.connect(self.sqlite_path, timeout=10, isolation_level=None)
            try:
                changed = conn.execute(
                    "UPDATE runs SET lease_expires_at = 0 WHERE run_id = ? AND state = 'running'",
                    (run_id,),
                ).rowcount
            finally:
                conn.close()
            assert changed == 1, f"{run_id} is not running"
            return
        client = self.server.client()
        keys = KeySpace(NAMESPACE)
        assert client.hget(keys.run(run_id), "state") == b"running", f"{run_id} is not running"
        client.hset(keys.run(run_id), "lease_expires", "0")
        client.zadd(keys.leases, {run_id: 0})

    def reset(self) -> None:
        """Empty the store (SQLite: a fresh file is a new URL, see test_process_worker's
        ``fresh_target``)."""
        if self.server is not None:
            self.server.client().flushall()
