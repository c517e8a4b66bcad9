"""What a loaded ``schedules.toml`` is: frozen dataclasses.

Nothing here reads a file or checks a value: :mod:`chronod.config.loader` reads the file, and
:mod:`chronod.config.reader` checks it and builds these, once per load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from chronod.alerts.model import Channel, JobAlerts
from chronod.schedules import Schedule
from chronod.store.base import Overlap

Catchup = Literal["none", "latest", "all"]
JSONValue = Any

DEFAULT_CONFIG = "schedules.toml"

# The one empty read-only mapping every job without kwargs or env shares (nothing can write it).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class CeleryConfig:
    """``[chronod.celery]``: where ``celery`` jobs are published (docs/celery.md).

    Exactly one of ``broker`` (a Celery broker URL: chronod builds a bare app with JSON and
    protocol 2) or ``app`` (``"package.module:attr"``: the project's own app, its routing and
    broker settings)."""

    broker: str | None = field(default=None, repr=False)  # may hold a password
    app: str | None = None


@dataclass(frozen=True, kw_only=True)
class DaemonConfig:
    """``[chronod]``: how the daemon and workers run; none of it affects which slots exist."""

    store: str | None = None
    lease: timedelta = timedelta(seconds=10)
    namespace: str = "chronod"
    workers: int | None = None  # None: one per CPU
    drain_timeout: timedelta = timedelta(seconds=30)
    attempt_lease: timedelta = timedelta(seconds=30)  # a run's attempt lease; heartbeat every third
    history: int = 100
    web_token: str | None = field(default=None, repr=False)
    replica_acks: int | None = None  # Redis WAIT; None: by the store URL's kind (docs/redis.md)
    smtp: str | None = field(default=None, repr=False)  # email channels (docs/notifications.md)
    mail_from: str | None = None  # the key 'from'
    celery: CeleryConfig | None = None  # ``[chronod.celery]``; required by ``celery`` jobs


class DigestMemo:
    """Digests of one load's jobs by what they are computed from, each computed once.

    A digest is a JSON encoding and a SHA-256 (~25 µs): once per job, 100,000 jobs spent seconds
    on them before the first tick, though most run one of a few commands. Only jobs without
    per-job values (arguments, environment) share an entry. The memo is addressed by content, so
    a copy of a job made with :func:`dataclasses.replace` that changes what runs gets its own
    digest. It holds only strings and immutable keys.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[Any, ...], str] = {}

    def digest(self, job: JobConfig) -> str:
        if job.args or job.kwargs or job.env or job.celery_queue or job.schedule.delays_fires:
            return job.computed_digest()
        key = (job.command, job.call, job.celery, job.cwd, job.timeout, job.kill_grace)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = job.computed_digest()
        return found


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """One ``[jobs.NAME]`` table with defaults applied and the schedule already built."""

    name: str
    schedule: Schedule
    timezone: str
    description: str = ""
    command: str | tuple[str, ...] | None = None
    call: str | None = None
    celery: str | None = None  # a Celery task name: the run publishes it (docs/celery.md)
    celery_queue: str | None = None  # the job's own ``queue`` on a celery job; None: app routing
    args: tuple[JSONValue, ...] = ()
    kwargs: Mapping[str, JSONValue] = field(default_factory=lambda: _EMPTY)
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    cwd: str | None = None
    queue: str = "default"
    timeout: timedelta = timedelta(hours=1)
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=30)
    kill_grace: timedelta = timedelta(seconds=10)
    grace: timedelta = timedelta(seconds=60)
    catchup: Catchup = "none"
    catchup_limit: int = 100
    overlap: Overlap = "skip"
    alerts: JobAlerts = field(default_factory=JobAlerts)  # notify, notify_on, notify_every, ping
    # The load's shared digests (the reader passes one memo to every job it builds); None: the
    # digest is computed from this job alone. Not part of the job's value.
    digests: DigestMemo | None = field(default=None, compare=False, repr=False)

    # Each identity is a JSON encoding and a SHA-256, computed once: the schedule keeps its
    # fingerprint (jobs of one load share schedule objects), and the digest is kept here on first
    # use (cached_property writes the instance's __dict__, which a frozen dataclass allows) and
    # shared between the jobs of a load through ``digests``.
    @property
    def fingerprint(self) -> str:
        """Identity of the schedule (which slots exist); changing it resets the job's state."""
        return self.schedule.fingerprint

    @cached_property
    def digest(self) -> str:
        """Identity of what a worker would execute; queue messages carry it (drift guard)."""
        if self.digests is not None:
            return self.digests.digest(self)
        return self.computed_digest()

    def computed_digest(self) -> str:
        """:attr:`digest` computed from :meth:`execution` (no sharing)."""
        text = json.dumps(self.execution(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def execution(self) -> dict[str, JSONValue]:
        """The fields that decide what a run executes and how; the source of :attr:`digest`."""
        command = list(self.command) if isinstance(self.command, tuple) else self.command
        # Only celery jobs carry the celery keys, so the digests of the others stay what they were
        # (a worker of the previous release would otherwise refuse every run as config-mismatch).
        celery = {"celery": self.celery, "celery_queue": self.celery_queue} if self.celery else {}
        # A jittered job's CHRONOD_SLOT is computed by the worker from the fire and its own
        # schedule (Schedule.nominal): a worker whose schedule differs would compute another.
        delayed = {"nominal_from": self.fingerprint} if self.schedule.delays_fires else {}
        return {
            **celery,
            **delayed,
            "command": command,
            "call": self.call,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "env": dict(self.env),
            "cwd": self.cwd,
            "timeout_us": _micros(self.timeout),
            "kill_grace_us": _micros(self.kill_grace),
        }

    @property
    def kind(self) -> str:
        """``interval``, ``cron`` or ``solar``."""
        return str(self.schedule.canonical()["kind"])

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


@dataclass(frozen=True, kw_only=True)
class Config:
    path: Path
    daemon: DaemonConfig
    jobs: Mapping[str, JobConfig]
    channels: Mapping[str, Channel] = field(default_factory=lambda: MappingProxyType({}))
    # Other files the load read (``exclude_file``): an edit of one is an edit of the config.
    extra_files: tuple[Path, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def unused_queues(config: Config, queues: Iterable[str]) -> str | None:
    """A warning for ``chronod worker --queue`` names no job of ``config`` uses, else None.

    A pool on such a queue takes nothing, silently: most likely a typo, or a worker started with
    another host's config.
    """
    used = sorted({job.queue for job in config.jobs.values()})
    unused = [queue for queue in queues if queue not in used]
    if not unused:
        return None
    names = ", ".join(repr(queue) for queue in unused)
    return (
        f"no job in {config.path} uses queue {names}: this worker takes no runs from it "
        f"(queues in use: {', '.join(used) or 'none'})"
    )


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$CHRONOD_CONFIG``, else ``./schedules.toml``."""
    chosen = explicit or os.environ.get("CHRONOD_CONFIG") or DEFAULT_CONFIG
    return Path(chosen)
