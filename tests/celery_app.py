"""The Celery project the Celery tests run real ``celery worker`` processes on.

Configured by the environment the test gives the worker: ``CHRONOD_TEST_BROKER`` (broker URL),
``CHRONOD_TEST_OUT`` (a file each task execution appends one JSON line to) and, when set,
``CHRONOD_TEST_HOOK`` (a ``schedules.toml``: the chronod hook is installed with it, serving its
metrics on ``CHRONOD_TEST_HOOK_METRICS`` when that is set too). The tasks are
named as a project's would be; nothing here knows chronod except the hook line.

chronod workers import this app too (``[chronod.celery] app = "tests.celery_app:app"``). With
``CHRONOD_TEST_FREEZE`` set to a path, the first process to publish a task writes its pid there
and stops itself (SIGSTOP) right after the publish: a test then kills it between publishing and
recording, which nothing else could time.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from celery import Celery, Task, signals

app = Celery("chronod_tests", broker=os.environ.get("CHRONOD_TEST_BROKER", "memory://"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("CHRONOD_TEST_HOOK"):
    import chronod.celery

    chronod.celery.install(
        app,
        config=os.environ["CHRONOD_TEST_HOOK"],
        metrics=os.environ.get("CHRONOD_TEST_HOOK_METRICS"),
    )


@signals.after_task_publish.connect  # type: ignore[untyped-decorator]
def _freeze_after_first_publish(**_: Any) -> None:
    marker = os.environ.get("CHRONOD_TEST_FREEZE")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # frozen once already: later publishes go on
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGSTOP)


def _record(task: Any, **fields: Any) -> None:
    request = task.request
    line = {
        "task": task.name,
        "id": request.id,
        "pid": os.getpid(),
        "headers": {
            key: getattr(request, key, None)
            for key in ("chronod_job", "chronod_slot", "chronod_attempt", "chronod_epoch")
        },
        "expires": request.expires,
        "queue": (request.delivery_info or {}).get("routing_key"),
        **fields,
    }
    with open(os.environ["CHRONOD_TEST_OUT"], "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


@app.task(bind=True, name="reports.tasks.send_digest")  # type: ignore[untyped-decorator]
def send_digest(self: Task, weeks: int, *, format: str = "text") -> str:
    _record(self, args=[weeks], kwargs={"format": format})
    return f"digest of {weeks} weeks as {format}"


@app.task(bind=True, name="reports.tasks.explode")  # type: ignore[untyped-decorator]
def explode(self: Task) -> None:
    _record(self)
    raise ValueError("the digest template is missing")


@app.task(bind=True, name="reports.tasks.flaky")  # type: ignore[untyped-decorator]
def flaky(self: Task) -> str:
    """Fails its first try and asks Celery for another, which succeeds."""
    _record(self, retries=self.request.retries)
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("the mail server hung up"), countdown=0, max_retries=1)
    return "delivered"
