"""``chronod run``: the scheduler supervisor (lease keeper + scheduler + optional worker pool).

The main loop is small on purpose: make sure a config is loaded, ask the keeper whether we lead,
tick the scheduler with the store's time, sleep until the next due slot (or until something
changes).
Signals only set flags and wake the loop: SIGHUP reloads (a bad file is reported, the running config
kept), SIGTERM/SIGINT stop (release the lease so a standby takes over at once, drain the pool).
A store outage is never fatal: the loop reports it, stops dispatching (leadership cannot be proven)
and retries with backoff.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Protocol

from chronod.clock import Clock
from chronod.config import Config, load_config
from chronod.dispatch import Scheduler
from chronod.errors import ConfigError, StoreError
from chronod.lock import LeaseKeeper
from chronod.logs import event
from chronod.notify import Notifier
from chronod.store import StoreSettings, open_store
from chronod.store.base import Fenced, Store

log = logging.getLogger("chronod.daemon")

MAX_SLEEP = 5.0  # re-read store time at least this often, so drift between clocks cannot build up
# Plans for the next due instant are made ahead of it (Scheduler.prepare): twice the expected
# planning time of the jobs due then (PREPARE_PER_JOB each until measured), within these bounds
# (seconds).
PREPARE_MIN = 0.02
PREPARE_MAX = 10.0
PREPARE_PER_JOB = 50e-6
PREPARE_SAMPLE = 100  # jobs planned at once before their time is trusted as a per-job cost
BACKOFF = (0.5, 1.0, 2.0, 5.0)


class Pool(Protocol):
    """An embedded worker pool (``chronod run --workers N``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def check(self) -> None:
        """Reap and respawn dead children; called from the daemon loop."""


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def store_settings(config: Config, override: str | None) -> StoreSettings:
    return StoreSettings(
        url=override or config.daemon.store,
        config_dir=config.directory,
        namespace=config.daemon.namespace,
        history=config.daemon.history,
    )


@dataclass
class Flags:
    """Set by signal handlers, read by the loop."""

    wake: threading.Event
    stop: threading.Event
    reload: threading.Event


class Daemon:
    def __init__(
        self,
        *,
        config: Config,
        config_file: Path,
        store_override: str | None,
        clock: Clock,
        notifier: Notifier | None = None,
        pool_factory: Callable[[Config], Pool | None] = lambda _: None,
    ) -> None:
        self.config = config
        self.config_file = config_file
        self.store_override = store_override
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.flags = Flags(threading.Event(), threading.Event(), threading.Event())
        self.node = node_name()
        settings = store_settings(config, store_override)
        self.store: Store = open_store(settings, clock)
        self.keeper = LeaseKeeper(
            open_store(settings, clock),
            node=self.node,
            ttl=config.daemon.lease,
            clock=clock,
            on_change=lambda _: self.flags.wake.set(),
        )
        self.scheduler = Scheduler(self.store)
        self.pool = pool_factory(config)
        self._loaded_epoch: int | None = None
        self._failures = 0
        self._per_job = PREPARE_PER_JOB  # seconds to plan one job, as last measured
        self._due_at: tuple[datetime, int] | None = None  # (wake, jobs due then), counted once

    # -- signals ----------------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        self.flags.reload.set()
        self.flags.wake.set()

    def _on_stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.flags.stop.set()
        self.flags.wake.set()

    # -- main loop --------------------------------------------------------------------------------

    def run(self) -> int:
        event(
            log,
            logging.INFO,
            "chronod starting",
            node=self.node,
            store=self.store.describe(),
            jobs=len(self.config.jobs),
        )
        self.keeper.start()
        if self.pool is not None:
            self.pool.start()
        announced = False
        try:
            while not self.flags.stop.is_set():
                if self.flags.reload.is_set():
                    self.reload()
                delay = self.step()
                if not announced and self._failures == 0:
                    self.notifier.ready(self.status_line())
                    announced = True
                if self.pool is not None:
                    self.pool.check()
                self.notifier.watchdog()
                watchdog = self.notifier.watchdog_interval()
                if watchdog is not None:
                    delay = min(delay, watchdog)
                self.flags.wake.clear()
                self.clock.wait(self.flags.wake, delay)
        finally:
            self.shutdown()
        return 0

    def step(self) -> float:
        """One pass: lead or not, tick, and say how long to sleep (seconds)."""
        lease = self.keeper.current()
        if lease is None:
            if self._loaded_epoch is not None:
                event(log, logging.INFO, "not leading: scheduler idle")
                self.scheduler.clear()
                self._loaded_epoch = None
            return 1.0
        try:
            if self._loaded_epoch != lease.epoch:
                self.scheduler.load(lease, self.config.jobs)
                self._loaded_epoch = lease.epoch
                self._due_at = None
                event(
                    log,
                    logging.INFO,
                    "leading: jobs loaded",
                    epoch=lease.epoch,
                    jobs=len(self.config.jobs),
                )
            now = self.store.now()
            read_at = self.clock.monotonic()
            self.scheduler.tick(lease, now, between=self.keeper.renew_if_due)
            wake = self.scheduler.next_wake()
        except Fenced as exc:
            # Logged here as well as by the keeper: the keeper's renewal may have noticed first
            # (and logged the step-down), but a refused write is worth its own line.
            event(log, logging.WARNING, f"write refused by the store: {exc}", epoch=lease.epoch)
            self.keeper.fenced(lease)
            self.scheduler.clear()
            self._loaded_epoch = None
            return 0.0
        except StoreError as exc:
            return self._backoff(exc)
        self._failures = 0
        # ``now`` was read before the tick: the time the tick took is already gone from the wait
        # (without this a tick of many slots made the next one late by its own duration).
        spent = self.clock.monotonic() - read_at
        until_wake = MAX_SLEEP if wake is None else (wake - now).total_seconds() - spent
        if wake is not None:
            until_wake = self._prepare(wake, until_wake)
        return max(0.0, min(until_wake, MAX_SLEEP, self.keeper.seconds_left()))

    def _prepare(self, wake: datetime, until_wake: float) -> float:
        """Plan the slots due at ``wake`` shortly before it, so the tick at ``wake`` only sends.

        Returns the time to sleep: until ``wake`` once prepared, else until it is time to prepare.
        """
        prepared = self.scheduler.prepared_until
        if prepared is not None and prepared >= wake:
            return until_wake
        if self._due_at is None or self._due_at[0] != wake:
            self._due_at = (wake, self.scheduler.count_due(wake))
        lead = min(max(2 * self._per_job * self._due_at[1], PREPARE_MIN), PREPARE_MAX)
        if until_wake > lead:
            return until_wake - lead
        started = self.clock.monotonic()
        planned = self.scheduler.prepare(wake)
        spent = self.clock.monotonic() - started
        if planned >= PREPARE_SAMPLE:
            self._per_job = spent / planned
        return until_wake - spent

    def _backoff(self, exc: Exception) -> float:
        delay = BACKOFF[min(self._failures, len(BACKOFF) - 1)]
        self._failures += 1
        event(log, logging.WARNING, f"store unavailable, not dispatching: {exc}", retry_in=delay)
        self.notifier.status(f"store unavailable: {exc}")
        return delay

    def reload(self) -> None:
        """SIGHUP: load the file again; keep the running config if the new one is invalid."""
        self.flags.reload.clear()
        self.notifier.reloading()
        try:
            config = load_config(self.config_file)
        except ConfigError as exc:
            for issue in exc.issues:
                event(
                    log,
                    logging.ERROR,
                    f"reload refused, keeping the running config: {issue.format()}",
                )
            self.notifier.ready(self.status_line())
            return
        self.config = config
        self._loaded_epoch = None  # resync (fingerprints, heap) on the next step
        event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        lease = self.keeper.current()
        role = f"leader epoch {lease.epoch}" if lease else "standby"
        return f"{role}, {len(self.config.jobs)} jobs"

    def shutdown(self) -> None:
        self.notifier.stopping()
        event(log, logging.INFO, "stopping: releasing the lease")
        self.keeper.stop(release=True)
        if self.pool is not None:
            self.pool.stop()
        self.store.close()
        self.keeper.store.close()
        event(log, logging.INFO, "stopped")
