"""Prometheus metrics (``--metrics HOST:PORT`` on ``run`` and ``worker``), without a dependency.

A :class:`Registry` holds counters, gauges and histograms and renders them in the text exposition
format 0.0.4; :class:`MetricsServer` serves that at ``http://HOST:PORT/metrics`` from a thread.
:class:`ChronodMetrics` is chronod's metric set on one registry, fed by the daemon (ticks,
leadership), by the worker children through the supervisor (:mod:`chronod.telemetry`: started and
finished runs) and by the store sampler (queue depths, job states, every few seconds; never per
scrape). One endpoint per ``chronod run`` / ``chronod worker`` process shows all of it.

Metrics
-------
``chronod_runs_total{job,outcome}`` (counter)
    Runs this process's workers ended, by terminal outcome as the store accepted it: ``succeeded``,
    ``failed``, ``timed-out``, ``config-mismatch``.
``chronod_run_retries_total{job}`` (counter)
    Failed or timed-out attempts that were queued again for a retry.
``chronod_run_duration_seconds{job}`` (histogram)
    Each attempt, from process start to exit.
``chronod_dispatch_lateness_seconds`` (histogram)
    Store time of the dispatch decision − the slot.
``chronod_start_lateness_seconds`` (histogram)
    Job process started − the instant its attempt was due (the slot; the retry time for a retry),
    on the worker host's clock, clamped at 0.
``chronod_missed_slots_total{job}``, ``chronod_skipped_slots_total{job}`` (counters)
    Slots recorded missed (late beyond ``grace``) and skipped (``overlap = "skip"``).
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

Every process samples the store (queue depths, the leader, job states) every few seconds, never per
scrape. So the per-job gauges come from the store: they survive restarts and read the same on every
host (use ``max by (job)`` across instances). Runs that end ``lost`` (their worker died) are decided
by the store, not by a worker, so they show in ``chronod history`` but not in
``chronod_runs_total``.

Example alert rules
-------------------
.. code-block:: yaml

    groups:
      - name: chronod
        rules:
          # The one that matters: a job that silently stopped succeeding. Fires when its last
          # success is older than 3 of its periods (its longest gap between fires); paused jobs
          # are left out. A job that never succeeded has no last-success series yet: the
          # ChronodJobFailing rule covers it once it fails.
          - alert: ChronodJobNotSucceeding
            expr: |
              (time() - max by (job) (chronod_job_last_success_timestamp_seconds))
                > 3 * max by (job) (chronod_job_interval_seconds)
              unless on (job) max by (job) (chronod_job_paused) == 1
            for: 5m
            labels: {severity: page}
            annotations:
              summary: "chronod job {{ $labels.job }} has not succeeded for 3 periods"
              description: >-
                Last success {{ $value | humanizeDuration }} ago;
                see `chronod history --job {{ $labels.job }}`.

          - alert: ChronodJobFailing
            expr: |
              sum by (job) (increase(chronod_runs_total{outcome=~"failed|timed-out"}[30m])) > 0
            labels: {severity: ticket}
            annotations:
              summary: "chronod job {{ $labels.job }} failed in the last 30 minutes"

          # A worker's config differs from the scheduler's: it refuses those runs.
          - alert: ChronodConfigMismatch
            expr: |
              sum by (job) (increase(chronod_runs_total{outcome="config-mismatch"}[15m])) > 0
            labels: {severity: page}
            annotations:
              summary: "workers refuse {{ $labels.job }}: their config differs from the leader's"

          # Nobody dispatches. A failover takes seconds: `for` rides it out.
          - alert: ChronodNoLeader
            expr: sum(chronod_leader) < 1 or absent(chronod_leader)
            for: 1m
            labels: {severity: page}
            annotations:
              summary: "no chronod scheduler holds the lease: nothing is being dispatched"

          # Every process reports the newest epoch it saw, so the max across them only moves
          # when leadership changes hands, not when one of them restarts.
          - alert: ChronodLeaderFlapping
            expr: changes(max(chronod_leader_epoch)[1h:1m]) > 5
            labels: {severity: ticket}
            annotations:
              summary: "chronod changed leader {{ $value }} times in an hour"

          # Restarting chronod cannot fix the store, so this is an alert, not a watchdog kill.
          - alert: ChronodStoreDown
            expr: chronod_store_up == 0
            for: 1m
            labels: {severity: page}
            annotations:
              summary: "{{ $labels.instance }} cannot reach the chronod store: nothing dispatched"

          # Reads work but writes fail (a full disk, a read-only mount): nothing is dispatched.
          - alert: ChronodStoreNotWritable
            expr: min(chronod_store_writable) == 0
            for: 1m
            labels: {severity: page}
            annotations:
              summary: "the chronod store refuses writes: nothing is dispatched or recorded"

          # Someone wrote a run chronod cannot read; it was quarantined, never run.
          - alert: ChronodQuarantinedRuns
            expr: sum by (job) (increase(chronod_quarantined_runs_total[1h])) > 0
            labels: {severity: ticket}
            annotations:
              summary: "malformed runs of {{ $labels.job }} quarantined: see chronod history"

          # p99 of (dispatch decision - slot): the scheduler is slow or keeps losing its lease.
          - alert: ChronodDispatchLate
            expr: |
              histogram_quantile(0.99,
                sum by (le) (rate(chronod_dispatch_lateness_seconds_bucket[10m]))) > 5
            for: 10m
            labels: {severity: ticket}
            annotations:
              summary: "chronod dispatches p99 {{ $value | humanizeDuration }} after the slot"

          # p99 of (job started - due): too few workers for the queue, or workers down.
          - alert: ChronodStartLate
            expr: |
              histogram_quantile(0.99,
                sum by (le) (rate(chronod_start_lateness_seconds_bucket[10m]))) > 60
            for: 10m
            labels: {severity: ticket}
            annotations:
              summary: "chronod jobs start p99 {{ $value | humanizeDuration }} late"

          - alert: ChronodMissedSlots
            expr: sum by (job) (increase(chronod_missed_slots_total[1h])) > 0
            labels: {severity: ticket}
            annotations:
              summary: "chronod missed {{ $value }} slot(s) of {{ $labels.job }} in an hour"

          - alert: ChronodQueueBacklog
            expr: max by (queue) (chronod_queue_depth) > 100
            for: 15m
            labels: {severity: ticket}
            annotations:
              summary: "{{ $value }} runs wait on queue {{ $labels.queue }}: are its workers up?"
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
import re
import socket
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from chronod.errors import ChronodError
from chronod.listen import listen_error
from chronod.logs import event
from chronod.store.base import DispatchStatus, JobState, LeaderInfo, Lease

if TYPE_CHECKING:
    from chronod.config import JobConfig
    from chronod.dispatch import TickReport

log = logging.getLogger("chronod.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
LabelValues = tuple[str, ...]
Kind = Literal["counter", "gauge", "histogram"]
_M = TypeVar("_M", bound="_Metric")

# Seconds. Lateness: a healthy daemon dispatches within milliseconds and a free worker starts
# within a claim wait; the long tail is outages and failovers. Durations: cron jobs run from
# milliseconds to hours.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600)
INTERVAL_FIRES = 8  # upcoming fires looked at for chronod_job_interval_seconds


# --------------------------------------------------------------------------------------------------
# The registry and the text format


class Registry:
    """Metric families in registration order; one lock for all (writes are tiny, scrapes rare)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return self._add(Counter(self, name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(self, name, help_text, labels))

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENESS_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(self, name, help_text, labels, buckets))

    def _add(self, metric: _M) -> _M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is registered twice")
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        """Every family in the text exposition format 0.0.4."""
        with self.lock:
            return "".join(metric.render() for metric in self._metrics.values())


class _Metric:
    kind: Kind

    def __init__(
        self, registry: Registry, name: str, help_text: str, labels: Sequence[str]
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate label names for {name}")
        self.registry = registry
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)

    def _key(self, values: Sequence[str]) -> LabelValues:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)

    def render(self) -> str:
        head = f"# HELP {self.name} {_escape_help(self.help)}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(self._lines())

    def _lines(self) -> Iterator[str]:
        raise NotImplementedError

    def _sample(self, suffix: str, key: Iterable[tuple[str, str]], value: float) -> str:
        pairs = ",".join(f'{name}="{_escape_label(v)}"' for name, v in key)
        labels = f"{{{pairs}}}" if pairs else ""
        return f"{self.name}{suffix}{labels} {format_value(value)}\n"


class _Scalar(_Metric):
    """A counter or gauge: one float per label set; unlabelled ones exist from the start at 0."""

    def __init__(
        self, registry: Registry, name: str, help_text: str, labels: Sequence[str]
    ) -> None:
        super().__init__(registry, name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if labels else {(): 0.0}

    def value(self, *labels: str) -> float | None:
        with self.registry.lock:
            return self._values.get(self._key(labels))

    def _lines(self) -> Iterator[str]:
        for key in sorted(self._values):
            yield self._sample("", zip(self.labels, key, strict=True), self._values[key])


class Counter(_Scalar):
    kind: Kind = "counter"

    def inc(self, *labels: str, by: float = 1.0) -> None:
        if by < 0:
            raise ValueError(f"{self.name}: a counter only goes up (inc by {by})")
        key = self._key(labels)
        with self.registry.lock:
            self._values[key] = self._values.get(key, 0.0) + by


class Gauge(_Scalar):
    kind: Kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self.registry.lock:
            self._values[key] = float(value)

    def replace(self, values: Iterable[tuple[LabelValues, float]]) -> None:
        """Set the whole family at once: label sets not in ``values`` disappear (retired jobs,
        queues no longer used)."""
        fresh = {self._key(key): float(value) for key, value in values}
        with self.registry.lock:
            self._values = fresh


class Histogram(_Metric):
    kind: Kind = "histogram"

    def __init__(
        self,
        registry: Registry,
        name: str,
        help_text: str,
        labels: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        super().__init__(registry, name, help_text, labels)
        if "le" in self.labels:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct finite numbers")
        self.bounds = (*bounds, math.inf)
        # Per label set: per-bucket (not cumulative) counts, then the sum.
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}
        if not labels:
            self._series[()] = ([0] * len(self.bounds), [0.0])

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        if math.isnan(value):
            return  # belongs in no bucket; would turn the sum into NaN for good
        index = bisect.bisect_left(self.bounds, value)  # the first bound >= value: "le"
        with self.registry.lock:
            counts, total = self._series.setdefault(key, ([0] * len(self.bounds), [0.0]))
            counts[index] += 1
            total[0] += value

    def count(self, *labels: str) -> int:
        with self.registry.lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def _lines(self) -> Iterator[str]:
        for key in sorted(self._series):
            counts, total = self._series[key]
            named = list(zip(self.labels, key, strict=True))
            running = 0
            for bound, count in zip(self.bounds, counts, strict=True):
                running += count
                yield self._sample("_bucket", [*named, ("le", format_value(bound))], running)
            yield self._sample("_sum", named, total[0])
            yield self._sample("_count", named, running)


def format_value(value: float) -> str:
    """A sample value as Go's exposition code writes it: ``+Inf``, ``NaN``, ``3``, ``0.25``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------------------------------
# chronod's metrics


class ChronodMetrics:
    """chronod's metric set (module docstring) and the events that move it."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.runs = r.counter(
            "chronod_runs_total",
            "Runs ended by this process's workers, by terminal outcome (as the store accepted it).",
            ("job", "outcome"),
        )
        self.retries = r.counter(
            "chronod_run_retries_total",
            "Failed or timed-out attempts that were queued again for a retry.",
            ("job",),
        )
        self.run_duration = r.histogram(
            "chronod_run_duration_seconds",
            "Duration of each attempt, from process start to exit.",
            ("job",),
            DURATION_BUCKETS,
        )
        self.dispatch_lateness = r.histogram(
            "chronod_dispatch_lateness_seconds",
            "Store time of the dispatch decision minus the slot's scheduled instant.",
        )
        self.start_lateness = r.histogram(
            "chronod_start_lateness_seconds",
            "Job process start minus the instant its attempt was due (slot, or retry time).",
        )
        self.missed = r.counter(
            "chronod_missed_slots_total",
            "Slots recorded as missed (late beyond grace, per catchup).",
            ("job",),
        )
        self.skipped = r.counter(
            "chronod_skipped_slots_total",
            "Slots skipped because the previous run was still active (overlap = skip).",
            ("job",),
        )
        self.uncertain = r.counter(
            "chronod_uncertain_slots_total",
            "Slots recorded uncertain: the store went back (rollback) and lost the window they "
            "fall in; they may have run then, and are never run again.",
            ("job",),
        )
        self.leader = r.gauge("chronod_leader", "1 while this process provably holds the lease.")
        self.epoch = r.gauge("chronod_leader_epoch", "Newest leader lease epoch this process saw.")
        self.renew_failures = r.counter(
            "chronod_lease_renew_failures_total", "Lease renewals that failed or were refused."
        )
        self.queue_depth = r.gauge(
            "chronod_queue_depth", "Runs queued per queue (sampled from the store).", ("queue",)
        )
        self.last_success = r.gauge(
            "chronod_job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run (sampled from the store).",
            ("job",),
        )
        self.interval = r.gauge(
            "chronod_job_interval_seconds",
            "Longest gap between the job's next fires: its period, for alerting.",
            ("job",),
        )
        self.paused = r.gauge(
            "chronod_job_paused", "1 while the job is paused (sampled from the store).", ("job",)
        )
        self.store_up = r.gauge("chronod_store_up", "1 while the store answers, else 0.")
        self.writable = r.gauge(
            "chronod_store_writable", "1 while the store accepts writes, else 0."
        )
        self.writable.set(1)
        self.store_write_failures = r.counter(
            "chronod_store_write_failures_total", "Store writes that failed (e.g. disk full)."
        )
        self.quarantined = r.counter(
            "chronod_quarantined_runs_total",
            "Malformed runs found in the store and quarantined (never run).",
            ("job",),
        )
        self._renew_failures_seen = 0
        self._queues: frozenset[str] = frozenset()

    # -- the scheduler ----------------------------------------------------------------------------

    def ticked(self, report: TickReport) -> None:
        """What one scheduler tick decided: dispatch lateness, skipped and missed slots."""
        for item, result in report.dispatched:
            if result.status in (DispatchStatus.QUEUED, DispatchStatus.WAITING):
                if result.dispatched_at is not None:
                    late = (result.dispatched_at - item.slot).total_seconds()
                    self.dispatch_lateness.observe(max(late, 0.0))
            elif result.status is DispatchStatus.SKIPPED:
                self.skipped.inc(item.job)
            elif result.status is DispatchStatus.UNCERTAIN:
                self.uncertain.inc(item.job)
        for job, count in report.missed.items():
            self.missed.inc(job, by=count)

    def leadership(self, lease: Lease | None, renew_failures: int) -> None:
        """The keeper's view, once per daemon loop pass."""
        self.leader.set(1 if lease is not None else 0)
        if lease is not None:
            self._saw_epoch(lease.epoch)
        # The keeper counts in a plain int; only the growth is added (a counter never goes back).
        if renew_failures > self._renew_failures_seen:
            self.renew_failures.inc(by=renew_failures - self._renew_failures_seen)
        self._renew_failures_seen = max(self._renew_failures_seen, renew_failures)

    def _saw_epoch(self, epoch: int) -> None:
        current = self.epoch.value() or 0
        if epoch > current:
            self.epoch.set(epoch)

    # -- the workers (events from the children, through the supervisor) --------------------------

    def run_event(self, body: Mapping[str, Any]) -> None:
        """One event a worker child reported (see :class:`chronod.telemetry.EventWriter`)."""
        kind, job = body.get("event"), str(body.get("job", ""))
        if kind == "quarantined":
            self.quarantined.inc(job)
        elif kind == "started" and isinstance(body.get("late"), int | float):
            self.start_lateness.observe(max(float(body["late"]), 0.0))
        elif kind == "finished":
            if isinstance(body.get("duration"), int | float):
                self.run_duration.observe(float(body["duration"]), job)
            outcome, recorded = body.get("outcome"), body.get("recorded")
            if recorded == "accepted" and isinstance(outcome, str):
                self.runs.inc(job, outcome)
            elif recorded == "retry":
                self.retries.inc(job)

    # -- the store, sampled ----------------------------------------------------------------------

    def store_reachable(self, up: bool) -> None:
        self.store_up.set(1 if up else 0)

    def store_write_failed(self) -> None:
        self.store_write_failures.inc()

    def store_writable(self, writable: bool) -> None:
        self.writable.set(1 if writable else 0)

    def sampled(
        self,
        depths: Mapping[str, int],
        leader: LeaderInfo | None,
        states: Mapping[str, JobState] | None,
    ) -> None:
        # Configured queues that hold nothing are absent from the store's answer: 0, not no data.
        known = dict.fromkeys(self._queues, 0) | dict(depths)
        self.queue_depth.replace(((queue,), n) for queue, n in known.items())
        if leader is not None:
            self._saw_epoch(leader.epoch)
        if states is None:
            return
        live = [s for s in states.values() if s.fingerprint]  # retired jobs would alert forever
        self.last_success.replace(
            ((s.name,), s.last_success_at.timestamp()) for s in live if s.last_success_at
        )
        self.paused.replace(((s.name,), 1 if s.paused else 0) for s in live)

    def configured(self, jobs: Mapping[str, JobConfig], now: datetime) -> None:
        """Each job's period and queue (start and reload; costs a few schedule steps per job)."""
        self._queues = frozenset(job.queue for job in jobs.values())
        periods = ((name, job_period(job, now)) for name, job in jobs.items())
        self.interval.replace(((name,), p) for name, p in periods if p is not None)


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


class MetricsError(ChronodError):
    """The metrics endpoint cannot be served (address in use, not ours …)."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all IPv4 interfaces); port 0 picks a free one."""
    match = re.fullmatch(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", text)
    if match is None:
        raise ValueError(f"expected HOST:PORT, [IPv6]:PORT or :PORT, got {text!r}")
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    host = match["v6"] or match["host"] or "0.0.0.0"
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck scraper never holds up the process's exit

    def __init__(self, address: tuple[str, int], registry: Registry) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds for a request to arrive: a silent client does not keep a thread

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE, self.server.registry.render())
        elif path == "/":
            self._reply(200, "text/plain; charset=utf-8", "chronod: metrics at /metrics\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", "not found: try /metrics\n")

    def _reply(self, status: int, content_type: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not an event worth a log line


class MetricsServer:
    """``GET /metrics`` on ``address`` from a daemon thread."""

    def __init__(self, registry: Registry, address: tuple[str, int]) -> None:
        self.registry = registry
        self.requested = address
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when 0 was asked for)."""
        if self._server is None:
            return self.requested
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        try:
            server = _Server(self.requested, self.registry)
        except (OSError, OverflowError) as exc:
            host, port = self.requested
            raise MetricsError(f"--metrics {_join(host, port)}: {listen_error(exc)}") from None
        self._server = server
        # Worker children are forked, not exec'd: without this they would keep the port bound
        # after the supervisor died, and its restart could not listen again.
        ref = weakref.ref(server)
        os.register_at_fork(after_in_child=lambda: _close_in_child(ref))
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() waits for the loop to notice
            name="chronod-metrics",
            daemon=True,
        )
        self._thread.start()
        event(log, logging.INFO, "serving metrics", address=_join(*self.address))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _close_in_child(ref: weakref.ref[_Server]) -> None:
    server = ref()
    if server is not None:
        with contextlib.suppress(OSError):
            server.socket.close()


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
