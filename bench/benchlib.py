"""Shared plumbing for the benchmarks that run real ``chronod`` processes.

Stores: a SQLite file in a scratch directory, a private ``redis-server`` on a free port (never a
shared server), or a database of its own on the PostgreSQL server at 127.0.0.1:5432. Daemons are
started with :class:`tests.procs.Processes` (the same helpers the process tests use), logs go to
files in the scratch directory, and every figure is read back from the store (``created_at`` of
a run is the store-time instant at which its slot was dispatched).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from chronod.store import StoreSettings, open_store
from chronod.store.base import Store
from tests.postgres_server import PostgresDatabase
from tests.redis_server import RedisServer

STORES = ("sqlite", "redis", "postgres")
# --store: one store, "both" (SQLite and Redis, the README's figures) or "all" three.
STORE_CHOICES = [*STORES, "both", "all"]


def store_kinds(choice: str) -> tuple[str, ...]:
    """The stores a ``--store`` choice names."""
    return {"both": STORES[:2], "all": STORES}.get(choice, (choice,))


@dataclass
class BenchStore:
    kind: str
    url: str
    directory: Path
    server: RedisServer | None = None

    def open(self) -> Store:
        return open_store(StoreSettings(url=self.url, config_dir=self.directory))


@contextlib.contextmanager
def scratch(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A scratch directory, removed afterwards unless ``keep``."""
    directory = Path(tempfile.mkdtemp(prefix=f"chronod-{prefix}-"))
    try:
        yield directory
    finally:
        if keep:
            print(f"(kept {directory})")
        else:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def bench_store(kind: str, directory: Path) -> Iterator[BenchStore]:
    """A fresh, empty store of ``kind`` under ``directory`` (Redis: a private server)."""
    if kind == "sqlite":
        yield BenchStore(kind, f"sqlite://{directory / 'state' / 'chronod.db'}", directory)
        return
    if kind == "postgres":
        # A database of its own on the server at 127.0.0.1:5432, dropped afterwards.
        database = PostgresDatabase()
        database.create()
        try:
            yield BenchStore(kind, database.url, directory)
        finally:
            database.drop()
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    server = RedisServer(directory / "redis")
    server.start()
    try:
        yield BenchStore(kind, server.url, directory, server)
    finally:
        server.stop()


def toml_jobs(
    jobs: Sequence[tuple[str, dict[str, str]]], lease: str = "10s", **defaults: str
) -> str:
    """A schedules.toml: ``[chronod] lease``, UTC defaults (plus ``defaults``) and the jobs."""
    lines = ["[chronod]", f'lease = "{lease}"', "", "[defaults]", 'timezone = "UTC"']
    lines += [f'{key} = "{value}"' for key, value in defaults.items()]
    for name, body in jobs:
        lines += ["", f"[jobs.{name}]", 'command = "true"']
        lines += [f'{key} = "{value}"' for key, value in body.items()]
    return "\n".join(lines) + "\n"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> str:
    """``min / p50 / p99 / max`` of durations given in seconds, shown in milliseconds."""
    if not seconds:
        return "no samples"
    return (
        f"min {min(seconds) * 1000:7.1f} ms   p50 {percentile(seconds, 50) * 1000:8.1f} ms"
        f"   p99 {percentile(seconds, 99) * 1000:8.1f} ms"
        f"   max {max(seconds) * 1000:8.1f} ms   (n={len(seconds)})"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of process ``pid`` in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def reproduce(script: str, argv: Sequence[str] | None) -> str:
    """The command line that reproduces this run."""
    words = [".venv/bin/python", "-m", f"bench.{script}", *(sys.argv[1:] if argv is None else argv)]
    return "reproduce: " + " ".join(words)


def machine() -> str:
    """One line about the machine the figures come from."""
    load = os.getloadavg()
    cpus = os.cpu_count() or 0
    return f"{cpus} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
