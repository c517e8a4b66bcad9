"""What the scheduler daemon, the worker pool and the commands share, without importing each other.

:mod:`chronod.worker` implements :class:`Pool` and :mod:`chronod.daemon` drives one; both (and the
operator commands) open the store the same way. Keeping these here means the worker never imports
the daemon (an import cycle waiting to happen) and ``chronod status`` imports neither.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Protocol

from chronod.config import Config
from chronod.store import StoreSettings


class Pool(Protocol):
    """An embedded worker pool (``chronod run --workers N``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def check(self) -> None:
        """Reap and respawn dead children; called from the daemon loop."""

    def next_check_in(self) -> float | None:
        """Seconds until :meth:`check` must run again though no SIGCHLD came (a respawn after its
        backoff); None when only a child's death (SIGCHLD) can give it something to do."""

    def reload(self, config: Config) -> None:
        """Use ``config`` from now on (SIGHUP, after the daemon validated it)."""


@dataclass(frozen=True)
class PoolHooks:
    """What the process around a pool lends it (see :mod:`chronod.telemetry`).

    ``events`` is the write end of a pipe on which children report their runs (one JSON line per
    event) to the supervisor, which aggregates them for ``--metrics``; None: children report
    nothing. (No lock around starting children: a pool starts them with fork+exec, never as
    plain forks, so nothing the supervisor's threads or SQLite connections hold at that moment
    can leak into a child; see :mod:`chronod.worker`.)
    """

    events: int | None = None


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def store_settings(config: Config, override: str | None) -> StoreSettings:
    return StoreSettings(
        url=override or config.daemon.store,
        config_dir=config.directory,
        namespace=config.daemon.namespace,
        history=config.daemon.history,
    )
