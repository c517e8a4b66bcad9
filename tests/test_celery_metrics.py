"""The Celery hook's run metrics (chronod.celery.metrics), without a Celery worker: what each
attempt's end counts, and what the endpoint warns about. The process tests in
test_celery_process.py scrape a real worker's endpoint (prefork in multiprocess mode, and solo)."""

from __future__ import annotations

import logging
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chronod.celery.metrics import MULTIPROC_ENV, HookMetrics
from chronod.store.base import ExternalRun, Outcome
from chronod.tz import UTC


def external(try_no: int = 0) -> ExternalRun:
    return ExternalRun(
        run_id="digest@2026-12-04T16:30:00Z",
        job="digest",
        slot=datetime(2026, 12, 4, 16, 30, tzinfo=UTC),
        attempt=1,
        epoch=3,
        queue="reports",
        try_no=try_no,
        executor="w1@host:12:ab",
    )


def samples(metrics: HookMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_a_retried_attempt_is_a_retry_and_the_final_end_a_run() -> None:
    metrics = HookMetrics()
    metrics.started(external(0), 0.25)
    metrics.ended(external(0), Outcome.RETRIED, 0.5)
    metrics.started(external(1), 30.0)  # a Celery retry's due instant is Celery's: not measured
    metrics.ended(external(1), Outcome.FAILED, 1.5)
    found = samples(metrics)
    assert found[("chronod_run_retries_total", (("job", "digest"),))] == 1
    assert found[("chronod_runs_total", (("job", "digest"), ("outcome", "failed")))] == 1
    assert ("chronod_runs_total", (("job", "digest"), ("outcome", "retried"))) not in found
    assert found[("chronod_run_duration_seconds_count", (("job", "digest"),))] == 2
    assert found[("chronod_run_duration_seconds_sum", (("job", "digest"),))] == 2.0
    assert found[("chronod_start_lateness_seconds_count", ())] == 1
    assert found[("chronod_start_lateness_seconds_sum", ())] == 0.25


class Worker:
    def __init__(self, pool: Any) -> None:
        self.pool_cls = pool


@pytest.mark.parametrize(
    ("pool", "multiprocess", "warned"),
    [
        ("prefork", False, True),
        (None, False, True),  # Celery's default pool is prefork
        ("solo", False, False),
        ("prefork", True, False),
    ],
)
def test_the_endpoint_serves_and_warns_when_children_would_be_invisible(
    pool: str | None,
    multiprocess: bool,
    warned: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    if multiprocess:
        monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    else:
        monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = HookMetrics()
    with caplog.at_level(logging.WARNING, logger="chronod.celery"):
        server = metrics.serve(("127.0.0.1", 0), Worker(pool))
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
            names = {f.name for f in text_string_to_metric_families(reply.read().decode())}
    finally:
        server.stop()
    assert any(MULTIPROC_ENV in r.getMessage() for r in caplog.records) is warned
    if not multiprocess:  # the multiprocess files of this test process hold nothing yet
        assert {"chronod_runs", "chronod_run_duration_seconds"} <= names
