"""What the scheduler daemon, the worker pool and the commands share, without importing each other.

:mod:`chronod.worker` implements :class:`Pool` and :mod:`chronod.daemon` drives one; both (and the
operator commands) open the store the same way. Keeping these here means the worker never imports
the daemon (an import cycle waiting to happen) and ``chronod status`` imports neither.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from chronod.config import Config, DaemonConfig, load_config
from chronod.errors import ConfigError
from chronod.logs import event
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
        replica_acks=config.daemon.replica_acks,
    )


def reload_config(path: Path, running: Config, log: logging.Logger) -> Config | None:
    """SIGHUP's first half, for ``run`` and ``worker`` alike: the file loaded again, or None.

    An invalid file is logged with every located error and None returned: the caller keeps
    ``running``. ``[chronod]`` settings (store, lease, pool size, ...) are read once at start;
    a reload that changes them says so, once, rather than pretending to have applied them.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            event(
                log, logging.ERROR, f"reload refused, keeping the running config: {issue.format()}"
            )
        return None
    changed = daemon_changes(running.daemon, config.daemon)
    if changed:
        event(
            log,
            logging.WARNING,
            "[chronod] settings changed; they take effect at the next restart: "
            + ", ".join(changed),
        )
    return config


def daemon_changes(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """Names of the ``[chronod]`` keys whose values differ (never the values: a URL or a token
    may hold a secret)."""
    return [f.name for f in fields(DaemonConfig) if getattr(old, f.name) != getattr(new, f.name)]
