"""Prometheus metrics (``--metrics HOST:PORT`` of ``run`` and ``worker``) via prometheus_client.

:class:`ChronodMetrics` is chronod's metric set on a registry of its own (never the library's
global one), fed by the daemon (ticks, leadership), by the worker children through the supervisor
(:mod:`chronod.telemetry`: started and finished runs) and by the store sampler (queue depths, job
states, every few seconds; never per scrape). The gauges read from the store and the config live in
a custom collector, :class:`SampledGauges`, replaced whole by each sample. :class:`MetricsServer`
serves the text format 0.0.4 at ``http://HOST:PORT/metrics`` (:mod:`chronod.listen`). One endpoint
per ``chronod run`` / ``chronod worker`` process shows all of it.

Metrics
-------
``chronod_runs_total{job,outcome}`` (counter)
    Runs this process's workers ended, by terminal outcome as the store accepted it: ``succeeded``,
    ``failed``, ``timed-out``, ``config-mismatch``.
``chronod_run_retries_total{job}`` (counter)
    Failed or timed-out attempts that were queued again for a retry.
``chronod_run_duration_seconds{job}`` (histogram)
    Each attempt, from process start to exit.
``chronod_start_lateness_seconds`` (histogram)
    Job process started − the instant its attempt was due (the slot; the retry time for a retry),
    on the worker host's clock, clamped at 0.
``chronod_dispatch_lateness_seconds`` (histogram)
    Store time of the dispatch decision − the slot.
``chronod_missed_slots_total{job}``, ``chronod_skipped_slots_total{job}`` (counters)
    Slots recorded missed (late beyond ``grace``) and skipped (``overlap = "skip"``).
``chronod_uncertain_slots_total{job}`` (counter)
    Slots recorded ``uncertain``: the store went back (a rollback) and lost the window they fall
    in; they may have run then, and are never run again.
``chronod_leader`` (gauge), ``chronod_leader_epoch`` (gauge)
    1 while this process provably holds the lease; the newest lease epoch it saw.
``chronod_lease_renew_failures_total`` (counter)
    Lease renewals that failed (store unreachable) or were refused.
``chronod_queue_depth{queue}`` (gauge)
    Queued runs per queue.
``chronod_job_last_success_timestamp_seconds{job}``, ``chronod_job_paused{job}`` (gauges)
    From the store's job states (retired jobs left out).
``chronod_job_interval_seconds{job}`` (gauge)
    The longest gap between the job's next 8 fires, from the config: its period, for alerting.
``chronod_store_up`` (gauge)
    1 while the store answers, else 0.
``chronod_store_writable`` (gauge), ``chronod_store_write_failures_total`` (counter)
    1 while the store accepts writes (0 from a write that failed, e.g. on a full disk, until one
    succeeds); failed writes seen by this process (its scheduler, lease keeper and workers).
``chronod_quarantined_runs_total{job}`` (counter)
    Malformed runs this process's workers found in the store and quarantined (outcome
    ``quarantined``; ``chronod history`` says what was wrong).
``chronod_notifications_total{channel,result}`` (counter)
    Notifications the leader's courier handled (docs/notifications.md), per channel (a
    ``[notify.NAME]``, or ``ping``) and result: ``ok``, ``error`` (retried), ``folded`` (flood
    control), ``given-up``.
``chronod_outbox_depth`` (gauge), ``chronod_outbox_dropped`` (gauge)
    Events waiting in the store's outbox, and those a full outbox dropped (since the store was
    created), as the leader last read them.

Every process samples the store (queue depths, the leader, job states) every few seconds, never per
scrape. So the per-job gauges come from the store: they survive restarts and read the same on every
host (use ``max by (job)`` across instances). Runs that end ``lost`` (their worker died) are decided
by the store, not by a worker, so they show in ``chronod history`` but not in
``chronod_runs_total``.

Alert rules
-----------
``contrib/prometheus/alerts.yml`` in the repository: a job that stopped succeeding (against its
``chronod_job_interval_seconds``), failures, config mismatches, no leader, a store down or not
writable, late dispatch and start, missed slots, a queue backlog.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from functools import partial
from http.server import BaseHTTPRequestHandler
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from chronod.listen import HTTPListener, ListenError, format_address
from chronod.listen import parse_address as _parse_address
from chronod.logs import event
from chronod.store.base import DispatchStatus, JobState, LeaderInfo, Lease

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from chronod.config import JobConfig
    from chronod.dispatch import TickReport

log = logging.getLogger("chronod.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. Lateness: a healthy daemon dispatches within milliseconds and a free worker starts
# within a claim wait; the long tail is outages and failovers. Durations: cron jobs run from
# milliseconds to hours.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600)
INTERVAL_FIRES = 8  # upcoming fires looked at for chronod_job_interval_seconds

# The gauges read from the store (and the config): name, label, help, in exposition order.
QUEUE_DEPTH = "chronod_queue_depth"
LAST_SUCCESS = "chronod_job_last_success_timestamp_seconds"
INTERVAL = "chronod_job_interval_seconds"
PAUSED = "chronod_job_paused"
SAMPLED = (
    (QUEUE_DEPTH, "queue", "Runs queued per queue (sampled from the store)."),
    (LAST_SUCCESS, "job", "Unix time of the job's last successful run (sampled from the store)."),
    (INTERVAL, "job", "Longest gap between the job's next fires: its period, for alerting."),
    (PAUSED, "job", "1 while the job is paused (sampled from the store)."),
)


# --------------------------------------------------------------------------------------------------
# The collector for the sampled gauges, and the text format


class SampledGauges:
    """The per-queue and per-job gauges, each family replaced whole by every sample.

    A custom collector rather than labelled ``Gauge`` objects: a family must lose the label sets a
    sample no longer names (a retired job, a queue no longer used) at once, and a scrape must see
    one sample's values, never a family half-way through being updated.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Mapping[str, float]] = {name: {} for name, _, _ in SAMPLED}

    def replace(self, name: str, values: Iterable[tuple[str, float]]) -> None:
        """Set family ``name`` to ``values`` (label value, sample value); the rest disappears."""
        if name not in self._values:
            raise KeyError(f"{name} is not a sampled gauge")
        fresh = {label: float(value) for label, value in values}
        with self._lock:
            self._values[name] = fresh

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = dict(self._values)
        for name, label, help_text in SAMPLED:
            family = GaugeMetricFamily(name, help_text, labels=[label])
            for key, value in sorted(values[name].items()):
                family.add_metric([key], value)
            yield family

    def describe(self) -> Iterator[Metric]:
        """The families without samples: lets the registry refuse a name registered twice."""
        for name, label, help_text in SAMPLED:
            yield GaugeMetricFamily(name, help_text, labels=[label])


class _Exposed:
    """A collector's families as chronod has always exported them, in two respects.

    No ``<name>_created`` series: prometheus_client adds them to counters and histograms
    (OpenMetrics' creation timestamps); they would double the series of every labelled counter.
    The library's own switch, ``disable_created_metrics()``, is process-global state.

    Whole-number bucket bounds written as ``le="1"``, as the Go client writes them, not
    ``le="1.0"``: a label value is part of a series' identity, so the other spelling would start
    new series on upgrade and break queries that name a bucket (``{le="60"}``) on Prometheus 2.
    """

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            created = family.name + "_created"
            # Each collect() builds its families afresh: changing this one changes no other scrape.
            family.samples = [_bucket_bound(s) for s in family.samples if s.name != created]
            yield family


def _bucket_bound(sample: Sample) -> Sample:
    bound = sample.labels.get("le")
    if bound is None or not float(bound).is_integer():  # "+Inf" and "0.25" stay as they are
        return sample
    return sample._replace(labels={**sample.labels, "le": str(int(float(bound)))})


def exposition(collector: Collector) -> bytes:
    """``collector``'s families in the Prometheus text format 0.0.4 (:data:`CONTENT_TYPE`)."""
    return generate_latest(_Exposed(collector))


# --------------------------------------------------------------------------------------------------
# chronod's metrics


class RunMetrics:
    """The metrics of the runs a process executed, on ``registry``: chronod's workers (through
    :class:`ChronodMetrics`) and a Celery worker with chronod's hook (:mod:`chronod.celery.metrics`)
    export the same families, so one dashboard sums both."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "chronod_runs_total",
            "Runs ended by this process's workers, by terminal outcome (as the store accepted it).",
            ("job", "outcome"),
            registry=registry,
        )
        self.retries = Counter(
            "chronod_run_retries_total",
            "Failed or timed-out attempts that were queued again for a retry.",
            ("job",),
            registry=registry,
        )
        self.run_duration = Histogram(
            "chronod_run_duration_seconds",
            "Duration of each attempt, from process start to exit.",
            ("job",),
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.start_lateness = Histogram(
            "chronod_start_lateness_seconds",
            "Job process start minus the instant its attempt was due (slot, or retry time).",
            registry=registry,
            buckets=LATENESS_BUCKETS,
        )


class ChronodMetrics:
    """chronod's metric set (module docstring) and the events that move it."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        run = RunMetrics(r)  # first, so the exposition keeps its order
        self.runs, self.retries = run.runs, run.retries
        self.run_duration, self.start_lateness = run.run_duration, run.start_lateness
        self.dispatch_lateness = Histogram(
            "chronod_dispatch_lateness_seconds",
            "Store time of the dispatch decision minus the slot's scheduled instant.",
            registry=r,
            buckets=LATENESS_BUCKETS,
        )
        self.missed = Counter(
            "chronod_missed_slots_total",
            "Slots recorded as missed (late beyond grace, per catchup).",
            ("job",),
            registry=r,
        )
        self.skipped = Counter(
            "chronod_skipped_slots_total",
            "Slots skipped because the previous run was still active (overlap = skip).",
            ("job",),
            registry=r,
        )
        self.uncertain = Counter(
            "chronod_uncertain_slots_total",
            "Slots recorded uncertain: the store went back (rollback) and lost the window they "
            "fall in; they may have run then, and are never run again.",
            ("job",),
            registry=r,
        )
        self.leader = Gauge(
            "chronod_leader", "1 while this process provably holds the lease.", registry=r
        )
        self.epoch = Gauge(
            "chronod_leader_epoch", "Newest leader lease epoch this process saw.", registry=r
        )
        self.renew_failures = Counter(
            "chronod_lease_renew_failures_total",
            "Lease renewals that failed or were refused.",
            registry=r,
        )
        self.sampled_gauges = SampledGauges()
        r.register(self.sampled_gauges)
        self.store_up = Gauge("chronod_store_up", "1 while the store answers, else 0.", registry=r)
        self.writable = Gauge(
            "chronod_store_writable", "1 while the store accepts writes, else 0.", registry=r
        )
        self.writable.set(1)
        self.store_write_failures = Counter(
            "chronod_store_write_failures_total",
            "Store writes that failed (e.g. disk full).",
            registry=r,
        )
        self.quarantined = Counter(
            "chronod_quarantined_runs_total",
            "Malformed runs found in the store and quarantined (never run).",
            ("job",),
            registry=r,
        )
        self.notifications = Counter(
            "chronod_notifications_total",
            "Notifications by channel ([notify.NAME], or ping) and result: ok, error, folded, "
            "given-up.",
            ("channel", "result"),
            registry=r,
        )
        self.outbox_depth = Gauge(
            "chronod_outbox_depth", "Events waiting in the store's outbox.", registry=r
        )
        self.outbox_dropped = Gauge(
            "chronod_outbox_dropped", "Events a full outbox dropped (since created).", registry=r
        )
        # The daemon loop and the store sampler both report epochs; the gauge keeps the newest.
        self._epoch_lock = threading.Lock()
        self._epoch_seen = 0
        self._renew_failures_seen = 0
        self._queues: frozenset[str] = frozenset()

    def render(self) -> bytes:
        """The whole set in the text format, as ``/metrics`` serves it."""
        return exposition(self.registry)

    # -- the scheduler ----------------------------------------------------------------------------

    def ticked(self, report: TickReport) -> None:
        """What one scheduler tick decided: dispatch lateness, skipped and missed slots."""
        for item, result in report.dispatched:
            if result.status in (DispatchStatus.QUEUED, DispatchStatus.WAITING):
                if result.dispatched_at is not None:
                    late = (result.dispatched_at - item.slot).total_seconds()
                    self.dispatch_lateness.observe(max(late, 0.0))
            elif result.status is DispatchStatus.SKIPPED:
                self.skipped.labels(item.job).inc()
            elif result.status is DispatchStatus.UNCERTAIN:
                self.uncertain.labels(item.job).inc()
        for job, count in report.missed.items():
            self.missed.labels(job).inc(count)

    def leadership(self, lease: Lease | None, renew_failures: int) -> None:
        """The keeper's view, once per daemon loop pass."""
        self.leader.set(1 if lease is not None else 0)
        if lease is not None:
            self._saw_epoch(lease.epoch)
        # The keeper counts in a plain int; only the growth is added (a counter never goes back).
        if renew_failures > self._renew_failures_seen:
            self.renew_failures.inc(renew_failures - self._renew_failures_seen)
        self._renew_failures_seen = max(self._renew_failures_seen, renew_failures)

    def _saw_epoch(self, epoch: int) -> None:
        with self._epoch_lock:
            if epoch > self._epoch_seen:
                self._epoch_seen = epoch
                self.epoch.set(epoch)

    # -- the workers (events from the children, through the supervisor) --------------------------

    def run_event(self, body: Mapping[str, Any]) -> None:
        """One event a worker child reported (see :class:`chronod.telemetry.EventWriter`)."""
        kind, job = body.get("event"), str(body.get("job", ""))
        if kind == "quarantined":
            self.quarantined.labels(job).inc()
        elif kind == "started" and _number(body.get("late")):
            self.start_lateness.observe(max(float(body["late"]), 0.0))
        elif kind == "finished":
            if _number(body.get("duration")):
                self.run_duration.labels(job).observe(float(body["duration"]))
            outcome, recorded = body.get("outcome"), body.get("recorded")
            if recorded == "accepted" and isinstance(outcome, str):
                self.runs.labels(job, outcome).inc()
            elif recorded == "retry":
                self.retries.labels(job).inc()

    # -- the store, sampled ----------------------------------------------------------------------

    def store_reachable(self, up: bool) -> None:
        self.store_up.set(1 if up else 0)

    def store_write_failed(self) -> None:
        self.store_write_failures.inc()

    def store_writable(self, writable: bool) -> None:
        self.writable.set(1 if writable else 0)

    def notified(self, channel: str, result: str) -> None:
        self.notifications.labels(channel, result).inc()

    def outbox(self, depth: int, dropped: int) -> None:
        self.outbox_depth.set(depth)
        self.outbox_dropped.set(dropped)

    def sampled(
        self,
        depths: Mapping[str, int],
        leader: LeaderInfo | None,
        states: Mapping[str, JobState] | None,
    ) -> None:
        # Configured queues that hold nothing are absent from the store's answer: 0, not no data.
        known = dict.fromkeys(self._queues, 0) | dict(depths)
        self.sampled_gauges.replace(QUEUE_DEPTH, known.items())
        if leader is not None:
            self._saw_epoch(leader.epoch)
        if states is None:
            return
        live = [s for s in states.values() if s.fingerprint]  # retired jobs would alert forever
        self.sampled_gauges.replace(
            LAST_SUCCESS,
            ((s.name, s.last_success_at.timestamp()) for s in live if s.last_success_at),
        )
        self.sampled_gauges.replace(PAUSED, ((s.name, 1 if s.paused else 0) for s in live))

    def configured(self, jobs: Mapping[str, JobConfig], now: datetime) -> None:
        """Each job's period and queue (start and reload; costs a few schedule steps per job)."""
        self._queues = frozenset(job.queue for job in jobs.values())
        periods = ((name, job_period(job, now)) for name, job in jobs.items())
        self.sampled_gauges.replace(INTERVAL, ((name, p) for name, p in periods if p is not None))


def _number(value: object) -> bool:
    """A finite or infinite number from an event; NaN belongs in no bucket and would turn a
    histogram's sum into NaN for good."""
    return isinstance(value, int | float) and not math.isnan(value)


def job_period(job: JobConfig, now: datetime) -> float | None:
    """Longest gap (seconds) between consecutive fires among the next few; None if < 2 fires.

    The longest, not the typical one: a weekday job's period includes its weekend, so an alert
    at "3 periods without success" does not fire every Monday.
    """
    fires = [fire.at for fire in islice(job.schedule.fires(now), INTERVAL_FIRES)]
    gaps = [(b - a).total_seconds() for a, b in pairwise(fires)]
    return max(gaps) if gaps else None


# --------------------------------------------------------------------------------------------------
# The HTTP endpoint


class MetricsError(ListenError):
    """The metrics endpoint cannot be served (address in use, not ours …)."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all IPv4 interfaces); port 0 picks a free one."""
    return _parse_address(text, any_host="0.0.0.0")


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # seconds for a request to arrive: a silent client does not keep a thread

    def __init__(self, collector: Collector, *args: Any) -> None:
        self.collector = collector  # before the base class, which handles the request at once
        super().__init__(*args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE, exposition(self.collector))
        elif path == "/":
            self._reply(200, "text/plain; charset=utf-8", b"chronod: metrics at /metrics\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not an event worth a log line


class MetricsServer:
    """``GET /metrics`` on ``address``: what ``collector`` (a registry) holds, from a thread."""

    def __init__(self, collector: Collector, address: tuple[str, int]) -> None:
        self.collector = collector
        self.requested = address
        self._listener: HTTPListener | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when 0 was asked for)."""
        return self.requested if self._listener is None else self._listener.address

    def start(self) -> None:
        self._listener = HTTPListener.start(
            self.requested,
            partial(_Handler, self.collector),
            option="--metrics",
            error=MetricsError,
            thread_name="chronod-metrics",
        )
        event(log, logging.INFO, "serving metrics", address=format_address(*self.address))

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


@contextlib.contextmanager
def serving(address: tuple[str, int] | None) -> Iterator[ChronodMetrics | None]:
    """chronod's metrics served on ``address`` for the block; None (no metrics) without one."""
    if address is None:
        yield None
        return
    metrics = ChronodMetrics()
    server = MetricsServer(metrics.registry, address)
    server.start()
    try:
        yield metrics
    finally:
        server.stop()
