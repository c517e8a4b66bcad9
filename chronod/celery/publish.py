"""Publishing a ``celery`` job's run as a Celery task message (docs/celery.md).

The worker child that claims the run publishes it, in its own process (no fork: publishing is
one broker round trip): a normal Celery protocol 2 message with the JSON serializer, whose task id
is the run id, with the run's slot, attempt and epoch as headers (``chronod_slot`` …) and
``expires`` at the slot plus the job's ``grace``, so a message that waited in the broker longer
than a late dispatch would have is dropped by Celery instead of running late. On AMQP brokers
publisher confirms are on: a publish returns once the broker has the message.

Celery is imported on the first publish; a worker without it fails the run with a one-line reason
(``chronod check`` says so ahead of time).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chronod.config.model import CeleryConfig, Config, JobConfig
from chronod.instants import format_utc

INSTALL_HINT = "Celery is not installed here: pip install 'chronod[celery]'"
HEADER_PREFIX = "chronod_"
CONNECT_TIMEOUT = 4.0  # seconds: a broker that does not answer fails the attempt (retries apply)
# Publishing retries inside kombu before the attempt fails: short, the attempt's retries are
# chronod's own (and a repeat is harmless: same task id, and the hook runs each run id once).
RETRY_POLICY = (
    ("max_retries", 2),
    ("interval_start", 0.2),
    ("interval_step", 0.5),
    ("interval_max", 1),
)


class PublishError(Exception):
    """The message could not be handed to the broker; the text says why, in one line."""


def celery_missing() -> bool:
    """True when Celery cannot be imported in this environment."""
    return importlib.util.find_spec("celery") is None


def missing_celery(config: Config) -> list[str]:
    """What ``chronod check`` says of ``config``'s celery jobs when Celery is not installed."""
    if not celery_missing():
        return []
    names = [name for name, job in config.jobs.items() if job.celery is not None]
    return [f"{config.path}: jobs.{name}.celery: {INSTALL_HINT}" for name in names]


@dataclass(frozen=True, kw_only=True)
class Message:
    """What is published for one attempt of one run."""

    task: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    headers: dict[str, Any]
    expires: datetime

    @classmethod
    def of(
        cls, job: JobConfig, *, run_id: str, slot: datetime, attempt: int, epoch: int
    ) -> Message:
        assert job.celery is not None
        return cls(
            task=job.celery,
            task_id=run_id,
            args=list(job.args),
            kwargs=dict(job.kwargs),
            queue=job.celery_queue,
            headers={
                f"{HEADER_PREFIX}job": job.name,
                f"{HEADER_PREFIX}run_id": run_id,
                f"{HEADER_PREFIX}slot": format_utc(slot),
                f"{HEADER_PREFIX}attempt": attempt,
                f"{HEADER_PREFIX}epoch": epoch,
            },
            expires=slot + job.grace,
        )

    def describe(self) -> str:
        where = f"queue {self.queue}" if self.queue else "the app's routing"
        return f"sent to Celery: task {self.task} id {self.task_id} via {where}"


class Publisher:
    """One worker child's Celery apps, built once per ``[chronod.celery]`` value and kept.

    ``settings`` gives the current ``[chronod.celery]`` (it follows config reloads)."""

    def __init__(
        self,
        settings: Callable[[], CeleryConfig | None],
        sys_path: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.sys_path = tuple(sys_path or ())
        self._apps: dict[CeleryConfig, Any] = {}

    def attempt(self, message: Message) -> tuple[str | None, float]:
        """Publish ``message``: (the reason it failed or None, seconds it took)."""
        began = time.monotonic()
        config = self.settings()
        if config is None:  # the reader refuses this; a config swapped under the worker might not
            return "no [chronod.celery] table in this worker's config", 0.0
        try:
            self.publish(config, message)
        except PublishError as exc:
            return str(exc), time.monotonic() - began
        return None, time.monotonic() - began

    def publish(self, config: CeleryConfig, message: Message) -> None:
        """Hand ``message`` to the broker, or raise :class:`PublishError`."""
        if celery_missing():
            raise PublishError(INSTALL_HINT)
        app = self.app(config)
        options: dict[str, Any] = {"queue": message.queue} if message.queue else {}
        try:
            app.send_task(
                message.task,
                args=message.args,
                kwargs=message.kwargs,
                task_id=message.task_id,
                headers=message.headers,
                expires=message.expires,
                serializer="json",
                retry=True,
                retry_policy=dict(RETRY_POLICY),
                **options,
            )
        except Exception as exc:  # kombu and the transports raise many kinds
            text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            raise PublishError(f"could not publish to Celery: {text}") from exc

    def app(self, config: CeleryConfig) -> Any:
        found = self._apps.get(config)
        if found is None:
            found = self._apps[config] = self._build(config)
        return found

    def _build(self, config: CeleryConfig) -> Any:
        if config.app is not None:
            app = self._import(config.app)
        else:
            from celery import Celery

            app = Celery("chronod", broker=config.broker, set_as_current=False)
            app.conf.update(
                task_protocol=2,
                task_serializer="json",
                accept_content=["json"],
                broker_connection_timeout=CONNECT_TIMEOUT,
            )
        # Publisher confirms (py-amqp): send_task returns once the broker holds the message.
        options = dict(app.conf.broker_transport_options or {})
        options.setdefault("confirm_publish", True)
        app.conf.broker_transport_options = options
        return app

    def _import(self, target: str) -> Any:
        module_name, _, path = target.partition(":")
        missing = [p for p in self.sys_path if p not in sys.path]
        sys.path[:0] = missing  # where the supervisor found its modules, as for ``call`` jobs
        try:
            value: Any = importlib.import_module(module_name)
            for part in path.split("."):
                value = getattr(value, part)
        except Exception as exc:
            raise PublishError(f"cannot load the Celery app {target}: {exc}") from exc
        return value

    def close(self) -> None:
        for app in self._apps.values():
            app.close()
        self._apps.clear()
