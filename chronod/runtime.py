"""What the scheduler daemon, the worker pool and the commands share, without importing each other.

:mod:`chronod.worker` implements :class:`Pool` and :mod:`chronod.daemon` drives one; both (and the
operator commands) open the store the same way. Keeping these here means the worker never imports
the daemon (an import cycle waiting to happen) and ``chronod status`` imports neither.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Protocol

from chronod.config import Config
from chronod.store import StoreSettings


class Pool(Protocol):
    """An embedded worker pool (``chronod run --workers N``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def check(self) -> None:
        """Reap and respawn dead children; called from the daemon loop."""

    def reload(self, config: Config) -> None:
        """Use ``config`` from now on (SIGHUP, after the daemon validated it)."""


@dataclass(frozen=True)
class PoolHooks:
    """What the process around a pool lends it (see :mod:`chronod.telemetry`).

    ``events`` is the write end of a pipe on which children report their runs (one JSON line per
    event) to the supervisor, which aggregates them for ``--metrics``; None: children report
    nothing. ``fork_lock`` is held around every ``fork()``, and the supervisor's other threads
    (the lease keeper, the store sampler) hold it while inside a store call. SQLite keeps
    process-wide state (its mutexes, and which connection of the process holds which lock on a
    database file) that a child inherits: forked while another thread is inside a transaction,
    the child's own connection would find the write lock "held by this process" forever, or
    hang on a mutex nobody will release.
    """

    events: int | None = None
    fork_lock: threading.Lock = field(default_factory=threading.Lock)


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def store_settings(config: Config, override: str | None) -> StoreSettings:
    return StoreSettings(
        url=override or config.daemon.store,
        config_dir=config.directory,
        namespace=config.daemon.namespace,
        history=config.daemon.history,
    )
