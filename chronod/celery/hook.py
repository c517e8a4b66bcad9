"""The hook for a Celery app: each chronod run executed once, and its outcome in chronod's history.

``chronod.celery.install(app)`` (docs/celery.md) wraps every task of ``app`` so that a message
chronod published (it carries the ``chronod_run_id`` header; other messages pass through
untouched) runs only if this execution is the first of its run and Celery try:
:meth:`~chronod.store.base.Store.begin_external` decides, in chronod's own store, before the task
body runs. A repeat — the message redelivered by the broker, or published again by a chronod worker
that died before recording it — is skipped with Celery's ``Ignore`` (state ``IGNORED``). The end of
the body (success, the exception's text, a ``Task.retry``) goes to
:meth:`~chronod.store.base.Store.end_external`, so ``chronod history`` shows it with its duration.

With ``install(app, metrics="HOST:PORT")`` the Celery worker also serves the run metrics a chronod
worker does, for the runs it executed (:mod:`chronod.celery.metrics`).

The wrap replaces each task's ``run`` before the worker builds its tracers: on ``worker_init`` and
when the app is finalized (both idempotent), so tasks registered by autodiscovery are covered.

Failing closed: if chronod's store cannot be reached before the body, the task fails with the
store's error and does not run (running it could run the slot twice). If it cannot be reached
after, the outcome is only logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import signals
from celery.exceptions import Ignore, Retry

from chronod.celery.metrics import HookMetrics
from chronod.celery.publish import HEADER_PREFIX
from chronod.clock import Clock, SystemClock
from chronod.config import config_path, load_config
from chronod.errors import StoreError
from chronod.metrics import parse_address
from chronod.runtime import store_settings
from chronod.store import open_store
from chronod.store.base import AttemptResult, ExternalRun, Outcome, Store

log = logging.getLogger("chronod.celery")

WRAPPED = "__chronod_wrapped__"  # marks a task whose run is already wrapped


class Guard:
    """One Celery app's link to chronod's store, opened lazily once per process (prefork children
    open their own after the fork)."""

    def __init__(
        self,
        config: Path,
        store: str | None,
        metrics: HookMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.store_url = store
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self._store: Store | None = None
        self._pid = 0

    def store(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            settings = store_settings(load_config(self.config), self.store_url)
            self._store, self._pid = open_store(settings), os.getpid()
        return self._store

    def wrap(self, task: Any) -> None:
        if getattr(task, WRAPPED, False):
            return
        original: Callable[..., Any] = task.run

        def run(*args: Any, **kwargs: Any) -> Any:
            return self.execute(task, original, args, kwargs)

        task.run = run
        setattr(task, WRAPPED, True)

    def wrap_all(self, app: Any) -> None:
        for task in list(app.tasks.values()):
            self.wrap(task)

    def execute(
        self, task: Any, body: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        run = external_run(task.request)
        if run is None:
            return body(*args, **kwargs)
        if not self.store().begin_external(run):
            log.info("chronod run %s (try %d) was executed before: skipped", run.run_id, run.try_no)
            raise Ignore(f"chronod run {run.run_id} was executed before")
        began = self.clock.monotonic()
        if self.metrics is not None:
            self.metrics.started(run, (self.clock.now() - run.slot).total_seconds())
        try:
            value = body(*args, **kwargs)
        except Retry as exc:
            self.end(run, AttemptResult(outcome=Outcome.RETRIED, error=one_line(exc)), began)
            raise
        except Exception as exc:
            self.end(run, AttemptResult(outcome=Outcome.FAILED, error=one_line(exc)), began)
            raise
        self.end(run, AttemptResult(outcome=Outcome.SUCCEEDED), began)
        return value

    def end(self, run: ExternalRun, result: AttemptResult, began: float) -> None:
        if self.metrics is not None:
            self.metrics.ended(run, result.outcome, self.clock.monotonic() - began)
        try:
            self.store().end_external(run, result)
        except StoreError as exc:
            log.warning(
                "chronod run %s ended %s, not recorded: %s", run.run_id, result.outcome.value, exc
            )


def external_run(request: Any) -> ExternalRun | None:
    """The chronod run a Celery request executes, from its headers; None for other messages."""
    run_id = getattr(request, f"{HEADER_PREFIX}run_id", None)
    if not isinstance(run_id, str):
        return None
    slot = str(getattr(request, f"{HEADER_PREFIX}slot", ""))
    delivery = getattr(request, "delivery_info", None) or {}
    return ExternalRun(
        run_id=run_id,
        job=str(getattr(request, f"{HEADER_PREFIX}job", run_id.partition("@")[0])),
        slot=datetime.fromisoformat(slot.replace("Z", "+00:00")),
        attempt=int(getattr(request, f"{HEADER_PREFIX}attempt", 1)),
        epoch=int(getattr(request, f"{HEADER_PREFIX}epoch", 0)),
        queue=str(delivery.get("routing_key") or ""),
        try_no=int(getattr(request, "retries", 0) or 0),
        executor=f"{getattr(request, 'hostname', None) or socket.gethostname()}:{os.getpid()}:"
        f"{secrets.token_hex(4)}",
    )


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:1000]


def install(
    app: Any,
    *,
    config: str | os.PathLike[str] | None = None,
    store: str | None = None,
    metrics: str | None = None,
) -> Guard:
    """Wrap ``app``'s tasks (see the module docstring). ``config``: the ``schedules.toml`` whose
    ``[chronod]`` names the store (default ``$CHRONOD_CONFIG``, else ``./schedules.toml``);
    ``store``: a store URL that overrides it, as ``--store`` does; ``metrics``: ``HOST:PORT``
    (as ``--metrics``) where a Celery worker serves the run metrics of what it executed.

    Only ``celery worker`` starts the endpoint (on ``worker_init``): other programs that import
    the app — chronod's own workers publishing to it, ``celery inspect`` — do not. A bad address
    raises :class:`ValueError` here, when the app is imported."""
    address = None if metrics is None else parse_address(metrics)
    guard = Guard(config_path(config), store, HookMetrics() if address is not None else None)

    def worker_init(sender: Any = None, **_: Any) -> None:
        guard.wrap_all(app)
        if guard.metrics is not None and address is not None:
            guard.metrics.serve(address, sender)

    guard.wrap_all(app)
    app.on_after_finalize.connect(lambda sender=None, **_: guard.wrap_all(app), weak=False)
    signals.worker_init.connect(worker_init, weak=False)
    return guard
