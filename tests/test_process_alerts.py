"""Notifications as processes, on both stores: a failing job → one event per channel and one
``/fail`` ping; the worker SIGKILLed right after its outcome is recorded and the leader SIGKILLed
before it could deliver (its receiver down) → a new leader delivers the event, once."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chronod.instants import format_utc
from chronod.store.base import Store
from tests.procs import Processes, wait_for_event, wait_until, write_atomically
from tests.receivers import HTTPRecorder, serve_http
from tests.targets import Target
from tests.test_process_worker import (
    SECOND,
    SETTLE,
    STARTUP,
    config_text,
    last_second,
    one_slot,
    seed,
)

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(sys.platform != "linux", reason="uses the process helpers"),
]


@pytest.fixture
def http() -> Iterator[HTTPRecorder]:
    yield from serve_http()


@pytest.fixture
def store(target: Target) -> Iterator[Store]:
    opened = target.open()
    yield opened
    opened.close()


def notify_config(tmp_path: Path, http: HTTPRecorder, slot_body: Mapping[str, object]) -> Path:
    text = config_text({"backup": slot_body}).replace(
        "[defaults]", f'[notify.ops]\nwebhook = "{http.url}/hook/TOKEN"\n\n[defaults]'
    )
    path = tmp_path / "schedules.toml"
    write_atomically(path, text)
    return path


def failing_job(store: Store, tmp_path: Path, http: HTTPRecorder) -> tuple[str, Path]:
    """A one-slot job that fails, its store state seeded so that it runs at once: its run id
    and the config."""
    slot = last_second()
    body = one_slot(
        slot,
        command="echo disk full; exit 3",
        notify=["ops"],
        ping=f"{http.url}/ping/5f1c",
    )
    config = notify_config(tmp_path, http, body)
    seed(store, config, slot - SECOND)
    return f"backup@{format_utc(slot)}", config


def delivered(http: HTTPRecorder) -> Counter[str]:
    """(path without query, idempotency key) of every request received."""
    return Counter(
        f"{urlsplit(r.path).path} {r.headers.get('X-Chronod-Event')}" for r in http.received()
    )


def once(run_id: str) -> Counter[str]:
    """The start ping, the event and the fail ping of ``run_id``, each exactly once."""
    return Counter(
        {
            f"/ping/5f1c/start {run_id}#1:started": 1,
            f"/hook/TOKEN {run_id}#1:failed": 1,
            f"/ping/5f1c/fail {run_id}#1:failed": 1,
        }
    )


def test_a_failing_job_sends_one_event_and_one_fail_ping(
    target: Target, store: Store, procs: Processes, tmp_path: Path, http: HTTPRecorder
) -> None:
    run_id, config = failing_job(store, tmp_path, http)
    daemon = procs.run(config, target.url, workers=1, name="scheduler")
    wait_until(
        lambda: len(http.received()) >= 3,
        timeout=STARTUP + SETTLE,
        what="the event and two pings",
        context=daemon.tail,
    )
    wait_until(lambda: store.outbox_stats().depth == 0, timeout=SETTLE, what="an empty outbox")
    [hook] = [r for r in http.received() if r.path.startswith("/hook")]
    event = json.loads(hook.body)
    assert (event["run_id"], event["kind"], event["exit_code"]) == (run_id, "failed", 3)
    assert event["output_tail"] == "disk full\n"
    assert delivered(http) == once(run_id)
    daemon.term()
    assert daemon.wait_exit(timeout=STARTUP) == 0, daemon.tail()


def test_killed_worker_and_leader_the_next_leader_delivers_once(
    target: Target, store: Store, procs: Processes, tmp_path: Path, http: HTTPRecorder
) -> None:
    run_id, config = failing_job(store, tmp_path, http)
    http.status = 503  # the receiver is down: nothing can be delivered yet
    worker = procs.worker(config, target.url, concurrency=1, name="worker")
    first = procs.run(config, target.url, workers=0, name="first")
    wait_for_event(worker, r"^finished$", timeout=STARTUP + SETTLE, run_id=run_id)
    worker.kill()  # right after its outcome was recorded
    first.wait_for_log(r"^notification not delivered", timeout=SETTLE)
    first.kill()  # the leader dies with the event undelivered
    assert store.outbox_stats().depth == 2  # the start ping's and the failure's
    http.status = 200
    second = procs.run(config, target.url, workers=0, name="second")
    wait_until(
        lambda: store.outbox_stats().depth == 0,
        timeout=STARTUP + SETTLE,
        what="the new leader to deliver the outbox",
        context=second.tail,
    )
    assert delivered(http) == once(run_id)
    second.term()
    assert second.wait_exit(timeout=STARTUP) == 0, second.tail()


def test_flood_control_folds_failures_and_sends_recovered(
    target: Target, store: Store, procs: Processes, tmp_path: Path, http: HTTPRecorder
) -> None:
    counter = tmp_path / "count"
    body = {
        "every": "1s",
        # Fails three times, then succeeds.
        "command": f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; "
        "echo attempt $n; [ $n -ge 4 ]",
        "notify": ["ops"],
        "notify_every": "1h",
    }
    config = notify_config(tmp_path, http, body)
    daemon = procs.run(config, target.url, workers=1, name="scheduler")

    def kinds() -> list[tuple[str, int]]:
        events = [json.loads(r.body) for r in http.received()]
        return [(event["kind"], event["folded"]) for event in events]

    wait_until(
        lambda: ("recovered", 2) in kinds(),
        timeout=STARTUP + SETTLE,
        what="the recovered event",
        context=lambda: f"{kinds()}\n{daemon.tail()}",
    )
    daemon.term()
    assert daemon.wait_exit(timeout=STARTUP) == 0, daemon.tail()
    # One failure sent, two folded into the recovered event; later successes are no news.
    assert kinds() == [("failed", 0), ("recovered", 2)]
