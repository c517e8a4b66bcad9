"""What the scheduler daemon, the worker pool and the commands share, without importing each other.

:mod:`chronod.worker` implements :class:`Pool` and :mod:`chronod.daemon` drives one; both (and the
operator commands) open the store the same way, and ``run``, ``worker`` and ``web`` follow their
config file through one :class:`ConfigWatcher`. Keeping these here means the worker never imports
the daemon (an import cycle waiting to happen) and ``chronod status`` imports neither.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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


def reload_config(
    path: Path,
    running: Config,
    log: logging.Logger,
    *,
    explain: bool = True,
    restart_note: bool = True,
) -> Config | None:
    """The file loaded again, or None if it is invalid (the caller keeps ``running``); what a
    :class:`ConfigWatcher` does on every reload, with its reporting (see there).

    An invalid file is logged with every located error (``explain``), or as one line with the
    number of problems. ``[chronod]`` settings (store, lease, pool size, ...) are read once at
    start; a reload that changes them says so, once (``restart_note``), rather than pretending to
    have applied them.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        if explain:
            for issue in exc.issues:
                message = f"reload refused, keeping the running config: {issue.format()}"
                event(log, logging.ERROR, message)
        else:
            message = "config invalid; keeping the last good one"
            event(log, logging.WARNING, message, problems=len(exc.issues))
        return None
    changed = daemon_changes(running.daemon, config.daemon) if restart_note else []
    if changed:
        event(
            log,
            logging.WARNING,
            "[chronod] settings changed; they take effect at the next restart: "
            + ", ".join(changed),
        )
    return config


Stamp = tuple[int, int, int]


def file_stamp(path: Path) -> Stamp | None:
    """What changes when a file is edited or replaced (mtime, size, inode); None if it cannot be
    looked at."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def config_stamp(path: Path, extra: tuple[Path, ...]) -> tuple[Stamp | None, ...]:
    """:func:`file_stamp` of the config file and of the other files its last load read."""
    return tuple(file_stamp(each) for each in (path, *extra))


_UNREAD = object()  # the running config came from elsewhere than a read of its file seen here


class ConfigWatcher:
    """The running config and the file it came from: the one reload of ``run``, ``worker`` (the
    supervisor and each child) and ``web``.

    :meth:`reload` loads the file again when it, or a file its last load read (an
    ``exclude_file``), changed since it was last read (:func:`config_stamp`), or whenever asked
    (``force``: SIGHUP). An invalid file never replaces the running config: it is reported and
    :attr:`stale` is set until a valid one is loaded. Thread-safe (the web server's threads
    share one).

    Reporting, by who is listening:
        ``explain`` (the default): each located problem at ERROR, as ``chronod check`` would
        show it. Without it (the web page's process): one WARNING with the number of problems,
        since problem texts quote the offending values and those may be secrets; ``chronod
        check`` shows them to whoever may read the file.
        ``restart_note`` (the default): ``[chronod]`` settings are read once at start, so a
        reload that changes them says so rather than pretending to have applied them. Off where
        they are not this process's to apply (a worker child: its supervisor says it) or where
        they apply at once (the web server reads them on every request).
    """

    def __init__(
        self,
        config: Config,
        log: logging.Logger,
        *,
        explain: bool = True,
        restart_note: bool = True,
    ) -> None:
        self._config = config
        self._log = log
        self._explain = explain
        self._restart_note = restart_note
        self._lock = threading.Lock()
        self._stamp: object = _UNREAD  # so the first look reads the file, whatever its stamp
        self._stale = False

    @classmethod
    def load(cls, path: Path, log: logging.Logger, **how: bool) -> ConfigWatcher:
        """Read ``path`` for the first time (raises :class:`ConfigError` if it is invalid)."""
        # Stamp first: an edit landing during the load is then seen (and loaded) next time.
        stamp = file_stamp(path)
        watcher = cls(load_config(path), log, **how)
        # The other files are stamped after the load (it names them): an edit of one during the
        # load is missed until the next edit or SIGHUP.
        watcher._stamp = (stamp, *config_stamp(path, watcher._config.extra_files)[1:])
        return watcher

    @property
    def config(self) -> Config:
        return self._config

    @property
    def stale(self) -> bool:
        """Whether the file was last seen changed but invalid (the running config is older)."""
        return self._stale

    def current(self) -> tuple[Config, bool]:
        """The config after a reload if the file changed, and whether the file is newer but
        invalid (the web page asks on every request)."""
        with self._lock:
            self._reload(force=False)
            return self._config, self._stale

    def reload(self, *, force: bool = False) -> Config | None:
        """Load the file again if it changed since it was last read (or ``force``): the new
        config, which is now the running one; None if unchanged or refused."""
        with self._lock:
            return self._reload(force=force)

    def _reload(self, *, force: bool) -> Config | None:
        path = self._config.path
        stamp = config_stamp(path, self._config.extra_files)
        if stamp == self._stamp and not force:
            return None
        self._stamp = stamp
        config = reload_config(
            path, self._config, self._log, explain=self._explain, restart_note=self._restart_note
        )
        if config is None:
            self._stale = True
            return None
        if config.extra_files != self._config.extra_files:  # stamp what the new config reads
            self._stamp = (stamp[0], *config_stamp(path, config.extra_files)[1:])
        self._config, self._stale = config, False
        return config


# [chronod] keys a reload applies at once: the notification courier reads the running config,
# and workers publish Celery tasks with the config they reloaded.
APPLIED_AT_RELOAD = frozenset(("smtp", "mail_from", "celery"))


def daemon_changes(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """Names of the ``[chronod]`` keys whose values differ and need a restart (never the values:
    a URL or a token may hold a secret)."""
    return [
        f.name
        for f in fields(DaemonConfig)
        if f.name not in APPLIED_AT_RELOAD and getattr(old, f.name) != getattr(new, f.name)
    ]
