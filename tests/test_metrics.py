"""The text format chronod serves, the HTTP endpoint, chronod's metric set, and the telemetry
around it (store health, sampler, the worker children's event pipe), in-process.

The exposition is pinned three ways: exact text for a small registry (chronod's view of
``prometheus_client``'s output: no ``_created`` series, whole bucket bounds as ``le="1"``), a round
trip through the library's parser, and the list of every family chronod exports with its type and
labels (the end of this file). Values are read back as ``/metrics`` serves them.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from chronod.clock import ManualClock
from chronod.config import parse_config
from chronod.dispatch import TickReport
from chronod.errors import StoreUnavailable
from chronod.metrics import (
    CONTENT_TYPE,
    ChronodMetrics,
    MetricsError,
    MetricsServer,
    exposition,
    job_period,
    parse_address,
)
from chronod.notify import Notifier
from chronod.store.base import (
    DispatchResult,
    DispatchStatus,
    JobState,
    LeaderInfo,
    Lease,
    SlotDispatch,
)
from chronod.telemetry import (
    STALL_AFTER,
    EventReader,
    EventWriter,
    Sampler,
    StoreHealth,
    Telemetry,
)
from chronod.tz import UTC
from tests.procs import wait_until

T0 = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)


# -- the text format ------------------------------------------------------------------------------


def small_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    runs = Counter(
        "demo_runs_total", "Runs by job.\nSecond line \\ here.", ("job",), registry=registry
    )
    runs.labels("b").inc()
    runs.labels("a").inc(2)
    runs.labels('q"uo\\te\nd').inc()
    Gauge("demo_up", "1 when up.", registry=registry).set(1)
    hist = Histogram(
        "demo_seconds", "Durations.", ("job",), registry=registry, buckets=(0.5, 1, 2.5)
    )
    hist.labels("a").observe(0.5)  # on a bound: counts in that bucket (le = "less or equal")
    hist.labels("a").observe(2)
    hist.labels("a").observe(7.25)
    Histogram("demo_idle_seconds", "Never observed.", registry=registry, buckets=(1,))
    Gauge("demo_empty", "Labelled, no series yet.", ("queue",), registry=registry)
    return registry


EXPECTED = """\
# HELP demo_runs_total Runs by job.\\nSecond line \\\\ here.
# TYPE demo_runs_total counter
demo_runs_total{job="b"} 1.0
demo_runs_total{job="a"} 2.0
demo_runs_total{job="q\\"uo\\\\te\\nd"} 1.0
# HELP demo_up 1 when up.
# TYPE demo_up gauge
demo_up 1.0
# HELP demo_seconds Durations.
# TYPE demo_seconds histogram
demo_seconds_bucket{job="a",le="0.5"} 1.0
demo_seconds_bucket{job="a",le="1"} 1.0
demo_seconds_bucket{job="a",le="2.5"} 2.0
demo_seconds_bucket{job="a",le="+Inf"} 3.0
demo_seconds_count{job="a"} 3.0
demo_seconds_sum{job="a"} 9.75
# HELP demo_idle_seconds Never observed.
# TYPE demo_idle_seconds histogram
demo_idle_seconds_bucket{le="1"} 0.0
demo_idle_seconds_bucket{le="+Inf"} 0.0
demo_idle_seconds_count 0.0
demo_idle_seconds_sum 0.0
# HELP demo_empty Labelled, no series yet.
# TYPE demo_empty gauge
"""


def test_text_format_is_exact() -> None:
    # No demo_runs_created / demo_seconds_created series, and le="1", not le="1.0".
    assert exposition(small_registry()).decode() == EXPECTED


def test_text_format_round_trips_through_the_reference_parser() -> None:
    text = exposition(small_registry()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = families["demo_runs"]  # the parser names a counter family without "_total"
    assert runs.type == "counter"
    assert runs.documentation == "Runs by job.\nSecond line \\ here."
    assert {s.labels["job"]: s.value for s in runs.samples} == {"a": 2, "b": 1, 'q"uo\\te\nd': 1}
    hist = families["demo_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.5": 1, "1": 1, "2.5": 2, "+Inf": 3}
    assert families["demo_up"].samples[0].value == 1


def sample(metrics: ChronodMetrics, name: str, **labels: str) -> float | None:
    """One sample as ``/metrics`` serves it (read back with the reference parser)."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


def test_bucket_bounds_keep_their_spelling_and_nothing_is_added() -> None:
    # A label value is part of a series' identity: le="60" must stay le="60" across an upgrade.
    text = ChronodMetrics().render().decode()
    assert 'chronod_start_lateness_seconds_bucket{le="60"} 0' in text
    assert 'chronod_start_lateness_seconds_bucket{le="0.025"} 0' in text
    assert '.0"' not in text
    assert "_created" not in text


def test_sampled_gauges_replace_drops_the_label_sets_not_given() -> None:
    metrics = ChronodMetrics()
    metrics.sampled_gauges.replace("chronod_queue_depth", [("a", 1), ("b", 2)])
    metrics.sampled_gauges.replace("chronod_queue_depth", [("b", 3)])
    assert sample(metrics, "chronod_queue_depth", queue="a") is None
    assert sample(metrics, "chronod_queue_depth", queue="b") == 3
    with pytest.raises(KeyError, match="not a sampled gauge"):
        metrics.sampled_gauges.replace("chronod_leader", [])


# -- the endpoint ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:0", ("localhost", 0)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["9464", "host", "host:port", "::1:9464", "h:70000", ""])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|out of range"):
        parse_address(text)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    started = MetricsServer(small_registry(), ("127.0.0.1", 0))
    started.start()
    yield started
    started.stop()


def test_server_serves_the_registry(server: MetricsServer) -> None:
    host, port = server.address
    assert port != 0
    status, content_type, body = get(f"http://{host}:{port}/metrics")
    assert (status, content_type, body) == (200, CONTENT_TYPE, EXPECTED)
    assert get(f"http://{host}:{port}/nope")[0] == 404


def test_server_reports_a_taken_port_in_one_line(server: MetricsServer) -> None:
    other = MetricsServer(CollectorRegistry(), server.address)
    with pytest.raises(
        MetricsError, match=r"^--metrics 127\.0\.0\.1:\d+: address already in use \(another"
    ):
        other.start()


def test_a_child_process_does_not_keep_the_port(server: MetricsServer) -> None:
    # Every process chronod starts is exec'd (worker children, their fork server, job commands).
    # Were one to inherit the listening socket, a supervisor restarted while its old children
    # drain could not listen again. Even a child started with close_fds=False must not hold it.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        close_fds=False,
    )
    try:
        address = server.address
        server.stop()
        server.stop()  # idempotent
        again = MetricsServer(CollectorRegistry(), address)
        again.start()  # the port is free again at once, the child still running
        again.stop()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


# -- chronod's metric set -------------------------------------------------------------------------


def slot_item(job: str, slot: datetime) -> SlotDispatch:
    return SlotDispatch(
        job=job,
        fingerprint="f",
        slot=slot,
        next_due=None,
        queue="default",
        digest="d",
        overlap="skip",
        max_attempts=1,
        guard_ttl=timedelta(days=1),
    )


def test_a_tick_feeds_dispatch_lateness_skipped_and_missed() -> None:
    metrics = ChronodMetrics()
    report = TickReport(
        dispatched=[
            (
                slot_item("a", T0),
                DispatchResult(
                    status=DispatchStatus.QUEUED, dispatched_at=T0 + timedelta(milliseconds=20)
                ),
            ),
            (
                slot_item("b", T0),
                DispatchResult(
                    status=DispatchStatus.WAITING, dispatched_at=T0 + timedelta(seconds=2)
                ),
            ),
            (slot_item("a", T0), DispatchResult(status=DispatchStatus.DUPLICATE)),
            (slot_item("c", T0), DispatchResult(status=DispatchStatus.SKIPPED)),
        ],
        missed={"d": 7},
    )
    metrics.ticked(report)
    assert sample(metrics, "chronod_dispatch_lateness_seconds_count") == 2
    assert sample(metrics, "chronod_skipped_slots_total", job="c") == 1
    assert sample(metrics, "chronod_missed_slots_total", job="d") == 7
    assert sample(metrics, "chronod_dispatch_lateness_seconds_bucket", le="0.025") == 1
    assert sample(metrics, "chronod_dispatch_lateness_seconds_sum") == 2.02


def test_leadership_epoch_and_renew_failures() -> None:
    metrics = ChronodMetrics()
    lease = Lease(token="t", epoch=7, node="n", expires_at=T0)
    metrics.leadership(lease, renew_failures=2)
    assert (sample(metrics, "chronod_leader"), sample(metrics, "chronod_leader_epoch")) == (1, 7)
    metrics.leadership(None, renew_failures=5)
    metrics.leadership(None, renew_failures=5)  # the keeper's total, not an increment
    assert (sample(metrics, "chronod_leader"), sample(metrics, "chronod_leader_epoch")) == (0, 7)
    assert sample(metrics, "chronod_lease_renew_failures_total") == 5
    metrics.sampled({}, LeaderInfo(node="m", epoch=9, expires_at=T0), None)
    assert sample(metrics, "chronod_leader_epoch") == 9  # a standby learns it from the store
    metrics.sampled({}, LeaderInfo(node="m", epoch=8, expires_at=T0), None)
    assert sample(metrics, "chronod_leader_epoch") == 9  # the newest seen, never back


def test_run_events_feed_runs_retries_durations_and_start_lateness() -> None:
    metrics = ChronodMetrics()
    events: list[dict[str, Any]] = [
        {"event": "started", "job": "a", "late": 0.03},
        {"event": "started", "job": "a", "late": -0.5},  # another host's clock: clamped
        {"event": "started", "job": "a", "late": math.nan},  # in no bucket: left out
        {"event": "finished", "job": "a", "outcome": "succeeded", "recorded": "accepted"},
        {"event": "finished", "job": "a", "outcome": "failed", "recorded": "retry", "duration": 2},
        {"event": "finished", "job": "a", "outcome": "failed", "recorded": "stale"},
        {"event": "finished", "job": "b", "outcome": "config-mismatch", "recorded": "accepted"},
        {"event": "unknown"},
    ]
    for body in events:
        metrics.run_event(body)
    assert sample(metrics, "chronod_start_lateness_seconds_count") == 2
    assert sample(metrics, "chronod_start_lateness_seconds_sum") == 0.03  # not NaN
    assert sample(metrics, "chronod_runs_total", job="a", outcome="succeeded") == 1
    # the retry is not an ended run
    assert sample(metrics, "chronod_runs_total", job="a", outcome="failed") is None
    assert sample(metrics, "chronod_run_retries_total", job="a") == 1
    assert sample(metrics, "chronod_runs_total", job="b", outcome="config-mismatch") == 1
    assert sample(metrics, "chronod_run_duration_seconds_count", job="a") == 1
    assert sample(metrics, "chronod_start_lateness_seconds_bucket", le="0.005") == 1


def job_state(name: str, **values: Any) -> JobState:
    base: dict[str, Any] = {
        "name": name,
        "fingerprint": "f",
        "watermark": None,
        "last_slot": None,
        "next_due": None,
    }
    return JobState(**(base | values))


def test_samples_feed_queue_depth_last_success_and_paused(tmp_path: Path) -> None:
    metrics = ChronodMetrics()
    config = parse_config(
        b'[defaults]\ntimezone = "UTC"\n'
        b'[jobs.a]\nevery = "90s"\ncommand = "true"\nqueue = "reports"\n'
        b'[jobs.b]\ncron = "0 9 * * 1-5"\ncommand = "true"\n',
        tmp_path / "s.toml",
    )
    metrics.configured(config.jobs, T0)
    states = {
        "a": job_state("a", last_success_at=T0),
        "b": job_state("b", paused=True),
        "gone": job_state("gone", fingerprint="", last_success_at=T0),  # retired
    }
    metrics.sampled({"default": 3}, None, states)
    assert sample(metrics, "chronod_queue_depth", queue="default") == 3
    # configured, empty: 0, not absent
    assert sample(metrics, "chronod_queue_depth", queue="reports") == 0
    last_success = "chronod_job_last_success_timestamp_seconds"
    assert sample(metrics, last_success, job="a") == T0.timestamp()
    assert sample(metrics, last_success, job="b") is None
    assert sample(metrics, last_success, job="gone") is None
    paused = "chronod_job_paused"
    assert (sample(metrics, paused, job="a"), sample(metrics, paused, job="b")) == (0, 1)
    assert sample(metrics, "chronod_job_interval_seconds", job="a") == 90
    # the weekend is the longest gap
    assert sample(metrics, "chronod_job_interval_seconds", job="b") == 3 * 86400
    metrics.sampled({}, None, {})
    assert sample(metrics, last_success, job="a") is None  # a job gone from the store goes away


def test_job_period_of_a_job_that_ends(tmp_path: Path) -> None:
    config = parse_config(
        b'[defaults]\ntimezone = "UTC"\n'
        b'[jobs.once]\nevery = "1h"\ncommand = "true"\nend = "2026-11-27T15:00:00Z"\n',
        tmp_path / "s.toml",
    )
    assert job_period(config.jobs["once"], T0) is None


# -- telemetry: store health, the sampler, the watchdog -------------------------------------------


@contextmanager
def captured(name: str) -> Iterator[list[logging.LogRecord]]:
    """Records of logger ``name`` (chronod's loggers may not propagate to pytest's handler)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(name)
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_store_health_logs_and_announces_transitions_only() -> None:
    clock = ManualClock(T0)
    metrics = ChronodMetrics()
    health = StoreHealth(clock, metrics)
    woken: list[bool] = []
    health.wake = lambda: woken.append(True)
    with captured("chronod.telemetry") as records:
        health.ok()
        health.failed(StoreUnavailable("connection refused"))
        clock.advance(4)
        health.failed(StoreUnavailable("connection refused"))
        assert health.outage() == (
            "store unavailable since 2026-11-27T14:30:00Z: connection refused"
        )
        assert sample(metrics, "chronod_store_up") == 0
        health.ok()
        health.ok()
    messages = [r.getMessage() for r in records]
    assert messages == [
        "store unreachable, retrying until it is back: connection refused",
        "store reachable again",
    ]
    assert len(woken) == 3  # first answer, down, back
    assert sample(metrics, "chronod_store_up") == 1
    assert health.outage() is None


@dataclass
class FakeStore:
    """Just what the sampler reads."""

    depths: dict[str, int] = field(default_factory=lambda: {"default": 2})
    down: bool = False
    block: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)  # a read has begun
    closed: bool = False

    def queue_depths(self) -> dict[str, int]:
        self.entered.set()
        if self.block is not None:
            self.block.wait(10)
        if self.down:
            raise StoreUnavailable("down")
        return dict(self.depths)

    def leader(self) -> LeaderInfo | None:
        return LeaderInfo(node="n", epoch=3, expires_at=T0)

    def job_states(self) -> Mapping[str, JobState]:
        return {"a": job_state("a", last_success_at=T0)}

    def close(self) -> None:
        self.closed = True


def make_sampler(store: FakeStore, metrics: ChronodMetrics | None = None) -> Sampler:
    clock = ManualClock(T0)
    health = StoreHealth(clock, metrics)
    return Sampler(
        store,  # type: ignore[arg-type]
        health,
        clock=clock,
        metrics=metrics,
    )


def test_sampler_reads_the_store_and_reports_outages() -> None:
    store = FakeStore()
    metrics = ChronodMetrics()
    sampler = make_sampler(store, metrics)
    assert sampler.probe() is True
    assert sampler.latest is not None
    assert sampler.latest.queued() == "2 queued"
    assert sample(metrics, "chronod_job_last_success_timestamp_seconds", job="a") == T0.timestamp()
    assert sample(metrics, "chronod_leader_epoch") == 3
    store.down = True
    assert sampler.probe() is False
    assert sampler.health.up is False
    assert sampler.stalled() is None  # failing is not hanging


def test_a_store_request_that_hangs_is_unhealthy() -> None:
    store = FakeStore(block=threading.Event())
    sampler = make_sampler(store)
    clock = sampler.clock
    assert isinstance(clock, ManualClock)
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(sampler.probe()))
    thread.start()
    wait_until(store.entered.is_set, timeout=5, what="the sampler in the store")
    clock.advance(STALL_AFTER + 1)
    assert sampler.stalled() == f"a store request has hung for more than {STALL_AFTER:g}s"
    assert store.block is not None
    store.block.set()
    thread.join(5)
    assert answers == [True]
    assert sampler.stalled() is None


def test_sampler_thread_starts_and_stops(tmp_path: Path) -> None:
    store = FakeStore()
    sampler = make_sampler(store)
    sampler.start()
    wait_until(lambda: sampler.latest, timeout=5, what="a first sample")
    sampler.stop()
    assert store.closed


class Recorder(Notifier):
    """A notifier that remembers what it would have sent."""

    def __init__(self) -> None:
        super().__init__(address="")
        self.sent: list[str] = []

    def ready(self, status: str) -> None:
        self.sent.append(f"READY {status}")

    def status(self, status: str) -> None:
        self.sent.append(f"STATUS {status}")

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG")


def test_ready_waits_for_the_store_and_the_watchdog_for_health() -> None:
    telemetry = Telemetry(FakeStore(), clock=ManualClock(T0), metrics=None)  # type: ignore[arg-type]
    notifier = Recorder()
    telemetry.announce(notifier, "waiting")
    telemetry.sampler.probe()
    telemetry.announce(notifier, "up")
    telemetry.announce(notifier, "up")
    telemetry.announce(notifier, "up", reloaded=True)
    assert notifier.sent == ["STATUS waiting", "READY up", "STATUS up", "READY up"]
    notifier.sent.clear()
    with captured("chronod.telemetry") as records:
        telemetry.feed_watchdog(notifier)
        telemetry.feed_watchdog(notifier, "the lease keeper thread died")
        telemetry.feed_watchdog(notifier, "the lease keeper thread died")
        telemetry.feed_watchdog(notifier)
    assert notifier.sent == ["WATCHDOG", "WATCHDOG"]
    assert [r.getMessage() for r in records] == [
        "unhealthy, not feeding the systemd watchdog: the lease keeper thread died",
        "healthy again: feeding the systemd watchdog",
    ]


def test_status_line_names_the_store_trouble_first_and_the_queue_depth_only_while_up() -> None:
    """The one STATUS builder of ``run`` and ``worker``: each shape a reader will meet."""
    store = FakeStore()
    telemetry = Telemetry(store, clock=ManualClock(T0), metrics=None)  # type: ignore[arg-type]
    daemon = {"role": "leader, epoch 3", "role_in_outage": "leader, epoch 3", "store": "redis://h"}
    assert telemetry.status_line("2 jobs", **daemon) == "waiting for the store (redis://h); 2 jobs"
    assert telemetry.status_line("1 worker on q") == "waiting for the store; 1 worker on q"
    telemetry.sampler.probe()
    assert telemetry.status_line("2 jobs", **daemon) == "leader, epoch 3; 2 jobs; 2 queued"
    assert telemetry.status_line("1 worker on q") == "1 worker on q; 2 queued"
    store.down = True
    telemetry.sampler.probe()
    down = "store unavailable since 2026-11-27T14:30:00Z: down"
    assert telemetry.status_line("2 jobs", **daemon) == f"{down}; leader, epoch 3; 2 jobs"
    assert telemetry.status_line("1 worker on q") == f"{down}; 1 worker on q"


# -- the children's event pipe --------------------------------------------------------------------


def test_events_from_forked_children_arrive_whole() -> None:
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    def keep(body: dict[str, Any]) -> None:
        with lock:
            received.append(body)

    reader = EventReader(keep)
    reader.start()
    children, per_child = 4, 200
    pids = []
    for child in range(children):
        pid = os.fork()
        if pid == 0:
            writer = EventWriter(reader.write_fd)
            for i in range(per_child):
                writer.emit("finished", job=f"job-{child}", n=i, pad="x" * 300, skip=None)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    wait_until(
        lambda: len(received) == children * per_child,
        timeout=10,
        what="every event",
        context=lambda: f"{len(received)} received",
    )
    reader.stop()
    for child in range(children):
        numbers = [b["n"] for b in received if b["job"] == f"job-{child}"]
        assert numbers == list(range(per_child))  # in order, none torn or lost
    assert all("skip" not in b for b in received)


def test_a_full_pipe_drops_events_instead_of_blocking_the_child() -> None:
    reader = EventReader(lambda _body: None)  # never started: nobody reads
    writer = EventWriter(reader.write_fd)
    began = time.monotonic()
    for i in range(20_000):  # far more than any pipe buffer holds
        writer.emit("started", job="a", late=0.1, n=i)
    assert time.monotonic() - began < 10
    writer.emit("finished", job="x" * 10_000)  # larger than PIPE_BUF: dropped, not torn
    reader.stop()


# -- the exported families, pinned ----------------------------------------------------------------

# Every family chronod exports: (name as scraped, type, label names other than "le"). Alert rules,
# dashboards and the README depend on these; a change here is a breaking change for operators.
FAMILIES = [
    ("chronod_runs_total", "counter", ("job", "outcome")),
    ("chronod_run_retries_total", "counter", ("job",)),
    ("chronod_run_duration_seconds", "histogram", ("job",)),
    ("chronod_start_lateness_seconds", "histogram", ()),
    ("chronod_dispatch_lateness_seconds", "histogram", ()),
    ("chronod_missed_slots_total", "counter", ("job",)),
    ("chronod_skipped_slots_total", "counter", ("job",)),
    ("chronod_uncertain_slots_total", "counter", ("job",)),
    ("chronod_leader", "gauge", ()),
    ("chronod_leader_epoch", "gauge", ()),
    ("chronod_lease_renew_failures_total", "counter", ()),
    ("chronod_queue_depth", "gauge", ("queue",)),
    ("chronod_job_last_success_timestamp_seconds", "gauge", ("job",)),
    ("chronod_job_interval_seconds", "gauge", ("job",)),
    ("chronod_job_paused", "gauge", ("job",)),
    ("chronod_store_up", "gauge", ()),
    ("chronod_store_writable", "gauge", ()),
    ("chronod_store_write_failures_total", "counter", ()),
    ("chronod_quarantined_runs_total", "counter", ("job",)),
    ("chronod_notifications_total", "counter", ("channel", "result")),
    ("chronod_outbox_depth", "gauge", ()),
    ("chronod_outbox_dropped", "gauge", ()),
]


def busy_metrics(tmp_path: Path) -> ChronodMetrics:
    """A metric set in which every family has at least one series."""
    metrics = ChronodMetrics()
    late = DispatchResult(status=DispatchStatus.QUEUED, dispatched_at=T0 + timedelta(seconds=1))
    metrics.ticked(
        TickReport(
            dispatched=[
                (slot_item("a", T0), late),
                (slot_item("c", T0), DispatchResult(status=DispatchStatus.SKIPPED)),
                (slot_item("u", T0), DispatchResult(status=DispatchStatus.UNCERTAIN)),
            ],
            missed={"d": 7},
        )
    )
    metrics.leadership(Lease(token="t", epoch=7, node="n", expires_at=T0), renew_failures=2)
    events: list[dict[str, Any]] = [
        {"event": "started", "job": "a", "late": 0.03},
        {"event": "finished", "job": "a", "outcome": "ok", "recorded": "accepted", "duration": 3},
        {"event": "finished", "job": "a", "outcome": "failed", "recorded": "retry"},
        {"event": "quarantined", "job": "q"},
    ]
    for body in events:
        metrics.run_event(body)
    metrics.store_write_failed()
    metrics.notified("ops", "ok")
    metrics.outbox(2, 1)
    config = parse_config(
        b'[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "90s"\ncommand = "true"\n',
        tmp_path / "s.toml",
    )
    metrics.configured(config.jobs, T0)
    metrics.sampled({"default": 3}, None, {"a": job_state("a", last_success_at=T0)})
    return metrics


def test_chronod_exports_exactly_these_families(tmp_path: Path) -> None:
    text = busy_metrics(tmp_path).render().decode()
    found = []
    for family in text_string_to_metric_families(text):
        suffix = "_total" if family.type == "counter" else ""
        labels = {name for sample in family.samples for name in sample.labels} - {"le"}
        assert family.samples, f"{family.name} has no series"
        assert all(set(s.labels) - {"le"} == labels for s in family.samples)
        found.append((family.name + suffix, family.type, tuple(sorted(labels))))
    assert found == [(name, kind, tuple(sorted(labels))) for name, kind, labels in FAMILIES]
