"""Shared fixtures.

``store`` is one fixture parametrized over the three implementations and built lazily: the Redis
server is only started (the PostgreSQL test database only created) when a test of that store
runs, so a missing server never skips the SQLite third (and fails instead of skipping when
CHRONOD_REQUIRE_REDIS=1 or CHRONOD_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from chronod.store.base import Store
from tests.postgres_server import PostgresDatabase, new_namespace, require_postgres
from tests.procs import Processes
from tests.redis_server import RedisServer
from tests.targets import Target

settings.register_profile(
    "chronod", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("chronod")


def pytest_report_header() -> str:
    """The runtime dependencies under test, so a failure in a drift run names its versions."""
    from importlib.metadata import PackageNotFoundError, version

    from tests.lockfile import RUNTIME

    found = []
    for name in RUNTIME:
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name}=={version(name)}")
    return "chronod runtime dependencies: " + " ".join(found)


@pytest.fixture(autouse=True)
def _chronod_logger_restored() -> Iterator[None]:
    """Undo what a command run in-process (click's CliRunner) did to the ``chronod`` logger.

    ``chronod.logs.configure`` points the logger at the stderr of the moment and stops propagation;
    left in place, a later test's ``caplog`` sees nothing and logging writes to a closed stream.
    Restored to the logger as importing chronod leaves it (no handler, propagating, NOTSET), not
    to what it was when the test began: a module-scoped fixture that ran a command before the
    first test of its module would otherwise be "restored" too.
    """
    yield
    logger = logging.getLogger("chronod")
    logger.handlers[:], logger.propagate, logger.level = [], True, logging.NOTSET


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[PostgresDatabase]:
    require_postgres()
    database = PostgresDatabase()
    database.create()
    yield database
    database.drop()


def make_store(
    kind: str, request: pytest.FixtureRequest, directory: Path, history: int = 100
) -> Store:
    if kind == "sqlite":
        from chronod.store.sqlite import SQLiteStore

        return SQLiteStore(directory / "state.db", history=history)
    if kind == "postgres":
        from chronod.store.postgres.store import PostgresStore

        database: PostgresDatabase = request.getfixturevalue("postgres_db")
        return PostgresStore.from_url(database.url, namespace=new_namespace(), history=history)
    from chronod.store.redis import RedisStore

    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    # A fresh namespace per test as well, so a leftover key can never pass for this test's state.
    return RedisStore.from_url(server.url, namespace=f"t{uuid.uuid4().hex[:12]}", history=history)


# The stores the contract suite runs on (test_store_contract.py); the other modules that take a
# ``store`` reach into SQLite and Redis internals, and run on those two.
ALL_STORE_KINDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=ALL_STORE_KINDS[:2])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    built = make_store(store_kind, request, tmp_path)
    yield built
    built.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """The store process tests share with their ``chronod`` processes (see tests.targets)."""
    if request.param == "sqlite":
        return Target("sqlite", f"sqlite://{tmp_path / 'state' / 'chronod.db'}", tmp_path, None)
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    return Target("redis", server.url, tmp_path, server)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """``chronod`` processes a test starts: stopped (and their logs kept) at teardown."""
    with Processes(tmp_path / "logs") as started:
        yield started
