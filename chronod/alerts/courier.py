"""Delivering the outbox: the leading daemon's courier thread.

Every second, while this process leads, :meth:`Courier.step` reads the due events
(:meth:`~chronod.store.base.Store.events_due`), sends each to the channels its job names for its
kind and to its ping URL, and settles it: gone once every target has it, else retried with
backoff (5 s doubling, at most 15 min between attempts) until :data:`MAX_ATTEMPTS` or a day has
passed, then given up (counted). It runs on a store connection and a thread of its own: a slow
receiver never delays a dispatch, and nothing it does touches a run or an outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chronod.alerts.channels import DeliveryError, send
from chronod.alerts.events import Notice
from chronod.alerts.flood import FloodGate
from chronod.alerts.model import PING_KINDS, channel_wants
from chronod.alerts.ping import send_ping
from chronod.clock import Clock
from chronod.config.model import Config, JobConfig
from chronod.errors import StoreError
from chronod.logs import event as log_event
from chronod.metrics import ChronodMetrics
from chronod.store.base import OutboxEvent, Store

log = logging.getLogger("chronod.alerts")

PING = "ping"  # the target name of a job's ping URL (a channel cannot be named so: see below)
BATCH = 50
MAX_ATTEMPTS = 12
MAX_AGE = timedelta(days=1)
FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=15)
INTERVAL = 1.0  # seconds between two looks at the outbox


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1, 2, …)."""
    return min(FIRST_RETRY * (1 << min(max(attempts - 1, 0), 16)), MAX_RETRY)


@dataclass(frozen=True, kw_only=True)
class ChannelStatus:
    """The last delivery over one channel as this process saw it (never a secret)."""

    sent: int = 0
    failed: int = 0
    last_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class Courier:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        *,
        clock: Clock,
        metrics: ChronodMetrics | None = None,
    ) -> None:
        self.store = store
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._gate = FloodGate()
        self._lock = threading.Lock()
        self._status: dict[str, ChannelStatus] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_failing = False
        self._down: set[str] = set()  # targets that failed in the current pass
        self._seen_config: Config | None = None

    # -- one pass ---------------------------------------------------------------------------------

    def step(self, now: datetime) -> int:
        """Deliver what is due; the number of events looked at."""
        config = self._config()
        if config is not self._seen_config:  # a reload: forget jobs that are gone
            self._gate.forget(set(config.jobs))
            self._seen_config = config
        events = self.store.events_due(BATCH)
        # A target that failed once in this pass is not tried again in it: 50 events to a
        # receiver that drops packets would otherwise hold the pass for 50 timeouts.
        self._down = set()
        for found in events:
            if self._stop.is_set():
                break
            self._deliver(config, found, now)
        if self._metrics is not None:
            stats = self.store.outbox_stats()
            self._metrics.outbox(stats.depth, stats.dropped)
        return len(events)

    def _counted(self, channel: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.notified(channel, result)

    def _deliver(self, config: Config, found: OutboxEvent, now: datetime) -> None:
        job = config.jobs.get(found.job)
        done = set(found.done)
        notices: dict[str, Notice] = {}
        for target in self._targets(job, found.kind):
            if target in done:
                continue
            folded: int | None = 0
            if found.attempts == 0 and target != PING and job is not None:
                folded = self._gate.admit(
                    found.job, target, found.kind, job.alerts.notify_every, now
                )
            if folded is None:
                done.add(target)  # folded: counted into the next event sent there
                self._counted(target, "folded")
            else:
                notices[target] = Notice(event=found, folded=folded)
        failed = False
        ping = job.alerts.ping if job is not None else None
        for target, notice in notices.items():
            if self._send(config, ping, target, notice, now):
                done.add(target)
            else:
                failed = True
        attempts = found.attempts + 1
        if not failed:
            self.store.settle_event(found.event_id, attempts, sorted(done), None)
        elif attempts >= MAX_ATTEMPTS or now - found.created_at >= MAX_AGE:
            self.store.settle_event(found.event_id, attempts, sorted(done), None)
            for target in notices.keys() - done:
                self._counted(target, "given-up")
            log_event(
                log, logging.WARNING, "notification given up", id=found.event_id, attempts=attempts
            )
        else:
            self.store.settle_event(found.event_id, attempts, sorted(done), now + backoff(attempts))

    def _targets(self, job: JobConfig | None, kind: str) -> list[str]:
        if job is None:  # no longer configured: nobody to tell
            return []
        targets = list(job.alerts.notify) if channel_wants(job.alerts, kind) else []
        if job.alerts.ping is not None and kind in PING_KINDS:
            targets.append(PING)
        return targets

    def _send(
        self, config: Config, ping: str | None, target: str, notice: Notice, now: datetime
    ) -> bool:
        if target in self._down:
            return False
        try:
            if target == PING and ping is not None:
                send_ping(ping, notice)
            else:
                channel = config.channels.get(target)
                if channel is None:
                    raise DeliveryError(f"channel {target!r} is no longer configured")
                send(channel, notice, smtp=config.daemon.smtp, sender=config.daemon.mail_from)
        except DeliveryError as exc:
            self._down.add(target)
            self._note(target, now, str(exc))
            log_event(
                log,
                logging.WARNING,
                f"notification not delivered: {exc}",
                channel=target,
                id=notice.key,
            )
            return False
        self._note(target, now, None)
        return True

    def _note(self, target: str, now: datetime, error: str | None) -> None:
        self._counted(target, "error" if error else "ok")
        self.store.note_delivery(target, error)  # for `chronod status`, from any host
        with self._lock:
            old = self._status.get(target, ChannelStatus())
            if error is None:
                new = replace(old, sent=old.sent + 1, last_ok_at=now)
            else:
                new = replace(old, failed=old.failed + 1, last_error=error, last_error_at=now)
            self._status[target] = new

    def status(self) -> dict[str, ChannelStatus]:
        with self._lock:
            return dict(self._status)

    # -- the thread -------------------------------------------------------------------------------

    def start(self, leading: Callable[[], bool]) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(leading,), name="chronod-courier", daemon=True
        )
        self._thread.start()

    def _loop(self, leading: Callable[[], bool]) -> None:
        while not self._clock.wait(self._stop, INTERVAL):
            if not leading():
                continue
            try:
                # Store time: retries are due by the store's clock (events_due), not this host's.
                while self.step(self.store.now()) >= BATCH and not self._stop.is_set():
                    pass
                self._store_failing = False
            except StoreError as exc:
                if not self._store_failing:  # one line per outage
                    log_event(log, logging.WARNING, f"outbox not read: {exc}")
                self._store_failing = True
            except Exception:  # a bug here must never stop the daemon's scheduling
                log.exception("notification courier pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # Not the length of a delivery: what is not settled stays in the outbox, and the
            # next leader sends it (the receiver drops the repeat by its idempotency key).
            self._thread.join(timeout=2.0)
        self.store.close()
