"""A worker child: ``python -m chronod._workerchild SETTINGS_FD`` (see :mod:`chronod.worker`).

Only its supervisor starts it (:class:`chronod.worker.WorkerPool`), with its settings
(:class:`ChildSettings`) as JSON in the inherited descriptor ``SETTINGS_FD``. It opens its own store
connection and runs a :class:`~chronod.consumer.Consumer` until told to stop, then exits with one
of the named codes below, which the supervisor logs by name.

The supervisor imports this module for :class:`ChildSettings` and the exit codes; the child runs
it as ``__main__``. Nothing the child imports imports this module (or :mod:`chronod.worker`), so the
child never holds a second copy of either.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chronod._proc import become_subreaper, die_with_parent
from chronod.config import Config, load_config, parse_config
from chronod.consumer import ConfigSource, Consumer, ConsumerSettings
from chronod.errors import ConfigError, StoreConfigError, StoreCorrupt, StoreError
from chronod.logs import LogFormat, event
from chronod.logs import configure as configure_logs
from chronod.store import StoreSettings, open_store
from chronod.telemetry import EventWriter

log = logging.getLogger("chronod.worker")

MODULE = "chronod._workerchild"  # what the supervisor runs with ``python -m``

EXIT_OK = 0  # stopped on request (drained)
EXIT_CRASHED = 1  # an unexpected exception (Python's own exit code for one)
EXIT_ORPHANED = 3  # its supervisor died; it drained and left
EXIT_USAGE = 64  # EX_USAGE: started without readable settings (not by a supervisor)
EXIT_STORE_ERROR = 69  # EX_UNAVAILABLE: the store failed in a way that is not transient
EXIT_STORE_CORRUPT = 76  # EX_PROTOCOL: the store holds something unusable (corrupt, foreign)
EXIT_CONFIG = 78  # EX_CONFIG: the store settings or the config text are unusable
EXIT_NAMES = {
    EXIT_OK: "stopped",
    EXIT_CRASHED: "crashed",
    EXIT_ORPHANED: "orphaned",
    EXIT_USAGE: "bad settings",
    EXIT_STORE_ERROR: "store error",
    EXIT_STORE_CORRUPT: "store corrupt",
    EXIT_CONFIG: "bad store settings or config",
}


@dataclass(frozen=True, kw_only=True)
class ChildSettings:
    """What a worker child is started with: JSON in a file its supervisor lets it inherit."""

    parent: int  # the supervisor's pid
    store: StoreSettings
    consumer: ConsumerSettings
    config_path: Path
    config_text: str | None  # None: read config_path
    events: int | None  # the run event pipe's write end (inherited), or None
    log_format: LogFormat
    log_level: int
    sys_path: tuple[str, ...]  # the supervisor's: ``call`` targets resolve against it
    mask: frozenset[int]  # the signal mask to run with once the handlers are installed

    def to_json(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "store": self.store.to_json(),
            "consumer": self.consumer.to_json(),
            "config_path": str(self.config_path),
            "config_text": self.config_text,
            "events": self.events,
            "log_format": self.log_format,
            "log_level": self.log_level,
            "sys_path": list(self.sys_path),
            "mask": sorted(self.mask),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChildSettings:
        return cls(
            parent=int(data["parent"]),
            store=StoreSettings.from_json(data["store"]),
            consumer=ConsumerSettings.from_json(data["consumer"]),
            config_path=Path(data["config_path"]),
            config_text=data["config_text"],
            events=data["events"],
            log_format="json" if data["log_format"] == "json" else "human",
            log_level=int(data["log_level"]),
            sys_path=tuple(data["sys_path"]),
            mask=frozenset(int(sig) for sig in data["mask"]),
        )

    def load_config(self) -> Config:
        if self.config_text is None:
            return load_config(self.config_path)
        return parse_config(self.config_text.encode("utf-8"), self.config_path)


@contextlib.contextmanager
def settings_file(settings: ChildSettings) -> Iterator[int]:
    """``settings`` in an unlinked file (nothing on disk, mode 0600); yields its descriptor.

    A file rather than a pipe: the supervisor writes it at once whatever its size (a large config),
    without waiting for the child to start reading; rather than argv: the store URL may hold a
    password, which argv would show to every user."""
    with tempfile.TemporaryFile() as handle:
        handle.write(json.dumps(settings.to_json()).encode())
        handle.flush()
        yield handle.fileno()


def _read_settings(fd: int) -> ChildSettings:
    with open(fd, "rb") as handle:
        handle.seek(0)
        return ChildSettings.from_json(json.loads(handle.read()))


def child_main(argv: Sequence[str]) -> int:
    """``python -m chronod._workerchild FD``: one worker child; returns its exit code.

    Started by :meth:`chronod.worker.WorkerPool._spawn` with the signals it handles blocked: it
    installs its handlers, then unblocks them (a stop or reload sent while it started up is handled
    then)."""
    try:
        settings = _read_settings(int(argv[0]))
    except (IndexError, ValueError, KeyError, TypeError, OSError) as exc:
        print(f"chronod worker child: no usable settings ({exc!r})", file=sys.stderr)
        return EXIT_USAGE
    # Parent death = drain and leave. (Linux sends it when the *thread* that started us ends: the
    # pool is driven from the supervisor's main thread, which lives as long as the process.)
    die_with_parent(signal.SIGTERM)
    configure_logs(settings.log_format, settings.log_level)
    if os.getppid() != settings.parent:
        return EXIT_ORPHANED
    try:
        return _child(settings)
    except Exception:
        log.exception("worker child crashed")
        return EXIT_CRASHED


def _child(settings: ChildSettings) -> int:
    try:
        config = settings.load_config()
    except ConfigError as exc:
        for issue in exc.issues:
            event(log, logging.ERROR, f"worker child cannot load the config: {issue.format()}")
        return EXIT_CONFIG
    adopts = become_subreaper()
    try:
        store = open_store(settings.store)
    except StoreConfigError as exc:
        event(log, logging.ERROR, f"worker child cannot open the store: {exc}")
        return EXIT_CONFIG
    consumer = Consumer(
        store,
        ConfigSource(config),
        settings.consumer,
        parent_pid=settings.parent,
        adopts_orphans=adopts,
        events=EventWriter(settings.events),
        sys_path=settings.sys_path,
    )
    try:
        consumer.install_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, settings.mask)
        consumer.run()
    except StoreError as exc:
        # Not transient (those are retried in the loop): the supervisor respawns this child after
        # its backoff; a corrupt store also makes the supervisor itself exit (telemetry: fatal).
        event(
            log,
            logging.ERROR,
            f"worker child stopping on a store error: {exc}",
            worker=consumer.worker_id,
        )
        consumer.events.store(exc)
        return EXIT_STORE_CORRUPT if isinstance(exc, StoreCorrupt) else EXIT_STORE_ERROR
    finally:
        consumer.close()
        store.close()
    return EXIT_ORPHANED if os.getppid() != settings.parent else EXIT_OK


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
