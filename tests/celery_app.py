"""The Celery project the Celery tests run real ``celery worker`` processes on.

Configured by the environment the test gives the worker: ``CHRONOD_TEST_BROKER`` (broker URL),
``CHRONOD_TEST_OUT`` (a file each task execution appends one JSON line to) and, when set,
``CHRONOD_TEST_HOOK`` (a ``schedules.toml``: the chronod hook is installed with it). The tasks are
named as a project's would be; nothing here knows chronod except the hook line.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery, Task

app = Celery("chronod_tests", broker=os.environ.get("CHRONOD_TEST_BROKER", "memory://"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


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
