"""A database of the tests' own on the PostgreSQL server at 127.0.0.1:5432 (trust auth).

One database per test session, with a random name, dropped at the end; each test takes a fresh
schema in it (the store's ``namespace``), so no test sees another's state. Where no server
answers, the tests skip loudly, unless ``CHRONOD_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
PORT = 5432
ADMIN_URL = f"postgresql://postgres@{HOST}:{PORT}/postgres"


def require_postgres() -> None:
    """Skip (locally) or fail (CHRONOD_REQUIRE_POSTGRES=1) loudly when no server answers."""
    reason = ""
    try:
        import psycopg
    except ImportError:
        reason = "psycopg is not installed (pip install 'chronod[postgres]')"
    else:
        try:
            psycopg.connect(ADMIN_URL, connect_timeout=3).close()
        except psycopg.Error as exc:
            reason = f"no PostgreSQL server at {HOST}:{PORT} ({' '.join(str(exc).split())})"
    if not reason:
        return
    if os.environ.get("CHRONOD_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + " and CHRONOD_REQUIRE_POSTGRES=1", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {reason}")


class PostgresDatabase:
    """A database created for this test session (``url``), and admin access to it."""

    def __init__(self) -> None:
        self.name = f"chronod_test_{uuid.uuid4().hex[:12]}"
        self.url = f"postgresql://postgres@{HOST}:{PORT}/{self.name}"

    def create(self) -> None:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @contextmanager
    def _admin(self) -> Iterator[Any]:
        import psycopg

        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """An autocommit connection to the test database (for peeking and killing)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            yield conn

    def terminate(self, application_name: str = "chronod") -> int:
        """pg_terminate_backend every connection of chronod to this database; how many."""
        with self.connect() as conn:
            rows = conn.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = %s AND application_name = %s AND pid != pg_backend_pid()""",
                (self.name, application_name),
            ).fetchall()
        return len(rows)


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


class PrivateServer:
    """A PostgreSQL server of one test's own (initdb in ``directory``, a free port), so that the
    test may crash and restart it: the shared server at 5432 is never touched that way.

    PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user (which
    Debian's packages create), in a directory of its own under the system's temporary directory
    (pytest's are private to root). Skips loudly (or fails, with CHRONOD_REQUIRE_POSTGRES=1) where
    ``initdb`` is not found.
    """

    def __init__(self, port: int) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = found[-1].parent if found else None
        if self.bin is None and shutil.which("initdb"):
            self.bin = Path(str(shutil.which("initdb"))).parent
        self.directory = Path(tempfile.mkdtemp(prefix="chronod-pg-"))
        self.data = self.directory / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if self.bin is None:
            reason = "initdb not found (Debian: apt-get install postgresql)"
            if os.environ.get("CHRONOD_REQUIRE_POSTGRES") == "1":
                pytest.fail(reason + " and CHRONOD_REQUIRE_POSTGRES=1", pytrace=False)
            pytest.skip(f"SKIPPED LOUDLY: {reason}")
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _ctl(self, *argv: str) -> None:
        assert self.bin is not None  # init() skipped the test otherwise
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), *argv)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=on"
        log = str(self.directory / "server.log")
        self._ctl("-l", log, "-o", options, "-w", "start")

    def crash(self) -> None:
        """Stop at once, as a power cut would (``immediate``: no shutdown checkpoint)."""
        self._ctl("-m", "immediate", "stop")

    def stop(self) -> None:
        """Stop the server if it runs, and remove its directory."""
        if self.bin is not None and (self.data / "postmaster.pid").exists():
            self._ctl("-m", "fast", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def wait_ready(self, timeout: float = 20.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
