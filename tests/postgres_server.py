"""A database of the tests' own on the PostgreSQL server at 127.0.0.1:5432 (trust auth).

One database per test session, with a random name, dropped at the end; each test takes a fresh
schema in it (the store's ``namespace``), so no test sees another's state. Where no server
answers, the tests skip loudly, unless ``CHRONOD_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
