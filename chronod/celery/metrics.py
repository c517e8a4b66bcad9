"""Metrics of the runs a Celery worker executed through chronod's hook (docs/celery.md).

A chronod worker counts the runs it ends in ``chronod_runs_total`` and its siblings
(:class:`chronod.metrics.RunMetrics`); a run whose body a Celery worker executes ends there, so the
hook counts it there, in the same families, and ``install(app, metrics="HOST:PORT")`` serves them
from the Celery worker. A dashboard that sums the families over every endpoint then sees Celery's
runs like any other.

Celery's default pool (prefork) runs task bodies in child processes, whose counters the parent's
endpoint cannot see in memory. prometheus_client's multiprocess mode is the standard answer (the
one gunicorn users know): with ``PROMETHEUS_MULTIPROC_DIR`` set in the Celery worker's
environment, every process writes its values to files there and the endpoint sums them
(:class:`~prometheus_client.multiprocess.MultiProcessCollector`). Without it, a prefork worker's
endpoint shows no runs, and the hook says so once, at the worker's start, rather than serving zeros
that look true.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from chronod.metrics import MetricsServer, RunMetrics
from chronod.store.base import ExternalRun, Outcome

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

log = logging.getLogger("chronod.celery")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Celery's names for pools whose task bodies run in child processes (``-P``; prefork is the
# default, and its class path when given as one).
CHILD_POOLS = ("prefork", "processes", "billiard")


class HookMetrics:
    """The run families for the tasks this process (or, in multiprocess mode, this worker's
    processes) executed for chronod."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = RunMetrics(self.registry)

    def started(self, run: ExternalRun, late: float) -> None:
        # A Celery retry (try_no > 0) is due when Celery's countdown says, which the hook does not
        # know: only a first try's start is measured against its slot.
        if run.try_no == 0:
            self.runs.start_lateness.observe(max(late, 0.0))

    def ended(self, run: ExternalRun, outcome: Outcome, duration: float) -> None:
        """As a chronod worker counts: every attempt's duration; a ``retried`` attempt in the
        retries counter; a run's final outcome in ``chronod_runs_total``."""
        self.runs.run_duration.labels(run.job).observe(max(duration, 0.0))
        if outcome is Outcome.RETRIED:
            self.runs.retries.labels(run.job).inc()
        else:
            self.runs.runs.labels(run.job, outcome.value).inc()

    def exported(self) -> Collector:
        """What the endpoint serves: every process's values in multiprocess mode, else this
        process's own."""
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        merged = CollectorRegistry()
        # Untyped in some prometheus_client releases: held as Any, so no version-dependent ignore.
        summing: Any = MultiProcessCollector
        summing(merged)  # registers itself on ``merged``
        return merged

    def serve(self, address: tuple[str, int], worker: Any) -> MetricsServer:
        """Start the endpoint in the Celery worker's main process (``worker_init``; ``worker`` is
        Celery's WorkController, whose pool says where task bodies run)."""
        pool = str(getattr(worker, "pool_cls", "") or "prefork").lower()
        if any(name in pool for name in CHILD_POOLS) and not os.environ.get(MULTIPROC_ENV):
            log.warning(
                "chronod hook metrics: the %s pool runs tasks in child processes whose counts this "
                "endpoint cannot see; set %s to an empty directory in the worker's environment "
                "(docs/celery.md)",
                pool,
                MULTIPROC_ENV,
            )
        server = MetricsServer(self.exported(), address)
        server.start()
        return server
