"""The metrics registry and its text format, the HTTP endpoint, chronod's metric set, and the
telemetry around it (store health, sampler, the worker children's event pipe), in-process.

The exposition format is pinned twice: exact text for a small registry, and a round trip through
``prometheus_client``'s parser (the reference implementation, a test-only dependency).
"""

from __future__ import annotations

import logging
import math
import os
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
    Registry,
    format_value,
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


def small_registry() -> Registry:
    registry = Registry()
    runs = registry.counter("demo_runs_total", "Runs by job.\nSecond line \\ here.", ("job",))
    runs.inc("b")
    runs.inc("a", by=2)
    runs.inc('q"uo\\te\nd')
    registry.gauge("demo_up", "1 when up.").set(1)
    hist = registry.histogram("demo_seconds", "Durations.", ("job",), (0.5, 1, 2.5))
    hist.observe(0.5, "a")  # on a bound: counts in that bucket (le = "less or equal")
    hist.observe(2, "a")
    hist.observe(7.25, "a")
    hist.observe(math.nan, "a")  # ignored: no bucket holds it
    registry.histogram("demo_idle_seconds", "Never observed.", (), (1,))
    registry.gauge("demo_empty", "Labelled, no series yet.", ("queue",))
    return registry


EXPECTED = """\
# HELP demo_runs_total Runs by job.\\nSecond line \\\\ here.
# TYPE demo_runs_total counter
demo_runs_total{job="a"} 2
demo_runs_total{job="b"} 1
demo_runs_total{job="q\\"uo\\\\te\\nd"} 1
# HELP demo_up 1 when up.
# TYPE demo_up gauge
demo_up 1
# HELP demo_seconds Durations.
# TYPE demo_seconds histogram
demo_seconds_bucket{job="a",le="0.5"} 1
demo_seconds_bucket{job="a",le="1"} 1
demo_seconds_bucket{job="a",le="2.5"} 2
demo_seconds_bucket{job="a",le="+Inf"} 3
demo_seconds_sum{job="a"} 9.75
demo_seconds_count{job="a"} 3
# HELP demo_idle_seconds Never observed.
# TYPE demo_idle_seconds histogram
demo_idle_seconds_bucket{le="1"} 0
demo_idle_seconds_bucket{le="+Inf"} 0
demo_idle_seconds_sum 0
demo_idle_seconds_count 0
# HELP demo_empty Labelled, no series yet.
# TYPE demo_empty gauge
"""


def test_text_format_is_exact() -> None:
    assert small_registry().render() == EXPECTED


def test_text_format_round_trips_through_the_reference_parser() -> None:
    families = {f.name: f for f in text_string_to_metric_families(small_registry().render())}
    runs = families["demo_runs"]  # the parser names a counter family without "_total"
    assert runs.type == "counter"
    assert runs.documentation == "Runs by job.\nSecond line \\ here."
    assert {s.labels["job"]: s.value for s in runs.samples} == {"a": 2, "b": 1, 'q"uo\\te\nd': 1}
    hist = families["demo_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.5": 1, "1": 1, "2.5": 2, "+Inf": 3}
    assert families["demo_up"].samples[0].value == 1


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (3.0, "3"),
        (-2, "-2"),
        (0.25, "0.25"),
        (1e-9, "1e-09"),
        (1e21, "1e+21"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values_are_written_as_go_writes_them(value: float, text: str) -> None:
    assert format_value(value) == text


def test_registry_refuses_what_the_format_cannot_express() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.counter("bad-name", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        registry.gauge("ok", "x", ("__reserved",))
    with pytest.raises(ValueError, match="reserved"):
        registry.histogram("h", "x", ("le",))
    with pytest.raises(ValueError, match="distinct finite"):
        registry.histogram("h2", "x", (), (1, 1))
    counter = registry.counter("c_total", "x", ("job",))
    with pytest.raises(ValueError, match="registered twice"):
        registry.counter("c_total", "x")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc("a", by=-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc()


def test_gauge_replace_drops_the_label_sets_not_given() -> None:
    registry = Registry()
    depth = registry.gauge("depth", "x", ("queue",))
    depth.replace([(("a",), 1), (("b",), 2)])
    depth.replace([(("b",), 3)])
    assert depth.value("a") is None
    assert depth.value("b") == 3
    assert 'depth{queue="a"}' not in registry.render()


def test_concurrent_updates_are_not_lost() -> None:
    registry = Registry()
    counter = registry.counter("n_total", "x")

    def bump() -> None:
        for _ in range(2000):
            counter.inc()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value() == 8000


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
    other = MetricsServer(Registry(), server.address)
    with pytest.raises(
        MetricsError, match=r"^--metrics 127\.0\.0\.1:\d+: address already in use \(another"
    ):
        other.start()


def test_a_forked_child_does_not_keep_the_port(server: MetricsServer) -> None:
    # A worker child is forked, not exec'd: were it to keep the listening socket, a supervisor
    # restarted while its old children drain could not listen again.
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        listening = server._server.socket.fileno() if server._server is not None else -1
        os.write(writer, b"closed" if listening == -1 else b"open")
        os._exit(0)
    os.waitpid(pid, 0)
    answer = os.read(reader, 16)
    os.close(reader)
    os.close(writer)
    assert answer == b"closed", "the listening socket is still open in a forked child"
    assert get(f"http://{server.address[0]}:{server.address[1]}/metrics")[0] == 200


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
    assert metrics.dispatch_lateness.count() == 2
    assert metrics.skipped.value("c") == 1
    assert metrics.missed.value("d") == 7
    text = metrics.registry.render()
    assert 'chronod_dispatch_lateness_seconds_bucket{le="0.025"} 1' in text
    assert "chronod_dispatch_lateness_seconds_sum 2.02" in text


def test_leadership_epoch_and_renew_failures() -> None:
    metrics = ChronodMetrics()
    lease = Lease(token="t", epoch=7, node="n", expires_at=T0)
    metrics.leadership(lease, renew_failures=2)
    assert (metrics.leader.value(), metrics.epoch.value()) == (1, 7)
    metrics.leadership(None, renew_failures=5)
    metrics.leadership(None, renew_failures=5)  # the keeper's total, not an increment
    assert (metrics.leader.value(), metrics.epoch.value()) == (0, 7)
    assert metrics.renew_failures.value() == 5
    metrics.sampled({}, LeaderInfo(node="m", epoch=9, expires_at=T0), None)
    assert metrics.epoch.value() == 9  # a standby learns the new epoch from the store


def test_run_events_feed_runs_retries_durations_and_start_lateness() -> None:
    metrics = ChronodMetrics()
    events: list[dict[str, Any]] = [
        {"event": "started", "job": "a", "late": 0.03},
        {"event": "started", "job": "a", "late": -0.5},  # another host's clock: clamped
        {"event": "finished", "job": "a", "outcome": "succeeded", "recorded": "accepted"},
        {"event": "finished", "job": "a", "outcome": "failed", "recorded": "retry", "duration": 2},
        {"event": "finished", "job": "a", "outcome": "failed", "recorded": "stale"},
        {"event": "finished", "job": "b", "outcome": "config-mismatch", "recorded": "accepted"},
        {"event": "unknown"},
    ]
    for body in events:
        metrics.run_event(body)
    assert metrics.start_lateness.count() == 2
    assert metrics.runs.value("a", "succeeded") == 1
    assert metrics.runs.value("a", "failed") is None  # the retry is not an ended run
    assert metrics.retries.value("a") == 1
    assert metrics.runs.value("b", "config-mismatch") == 1
    assert metrics.run_duration.count("a") == 1
    assert 'chronod_start_lateness_seconds_bucket{le="0.005"} 1' in metrics.registry.render()


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
    assert metrics.queue_depth.value("default") == 3
    assert metrics.queue_depth.value("reports") == 0  # configured, empty: 0, not absent
    assert metrics.last_success.value("a") == T0.timestamp()
    assert metrics.last_success.value("b") is None
    assert metrics.last_success.value("gone") is None
    assert (metrics.paused.value("a"), metrics.paused.value("b")) == (0, 1)
    assert metrics.interval.value("a") == 90
    assert metrics.interval.value("b") == 3 * 86400  # the weekend is the longest gap
    metrics.sampled({}, None, {})
    assert metrics.last_success.value("a") is None  # a job gone from the store goes away


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
        assert metrics.store_up.value() == 0
        health.ok()
        health.ok()
    messages = [r.getMessage() for r in records]
    assert messages == [
        "store unreachable, retrying until it is back: connection refused",
        "store reachable again",
    ]
    assert len(woken) == 3  # first answer, down, back
    assert metrics.store_up.value() == 1
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
    assert metrics.last_success.value("a") == T0.timestamp()
    assert metrics.epoch.value() == 3
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
