"""``chronod run``: the scheduler supervisor (lease keeper + scheduler + optional worker pool).

Signals, reload and how store failures are survived: docs/design.md §7.

The main loop is small on purpose: make sure a config is loaded, ask the keeper whether we lead,
tick the scheduler with the store's time, report (systemd, metrics), sleep until the next due slot
(or until something changes).
Signals only set flags and wake the loop, taking no lock (:class:`Flags`): SIGHUP reloads (a bad
file is reported, the running config kept; the embedded pool reloads too), SIGTERM/SIGINT stop
(release the lease so a standby takes over at once, drain the pool), SIGCHLD (with an embedded
pool) has a dead worker child reaped and replaced at once; the loop also wakes when a
replacement's backoff ends.
A store outage is never fatal, and neither is a store that answers but cannot write (a full
disk): the loop reports it (one log line when it starts, one when it ends, ``STATUS=``,
``chronod_store_up`` / ``chronod_store_writable``), stops dispatching (the keeper stops vouching
for the lease once its validity runs out) and retries with backoff; the store sampler's probe and
the keeper's next successful write wake it as soon as the store works again. Slots that fell due
meanwhile are caught up within ``grace``; the store's per-slot guards make a retried dispatch
harmless. What "healthy" means for the systemd watchdog, and why an outage is not unhealthy, is in
:mod:`chronod.telemetry`.

Two things end the daemon with exit code 1 and one log line, because waiting cannot fix them: a
store that holds something unusable (corrupt, foreign: checked once at start with
:meth:`~chronod.store.base.Store.verify`, and whenever a request says so), and a helper thread (the
lease keeper, the sampler, the run event reader) that ended on an unexpected error. The service
manager restarts it (``Restart=on-failure``); a node without its lease keeper would otherwise
never lead again.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from chronod._proc import Waker, only_caught
from chronod.alerts.courier import Courier
from chronod.clock import Clock
from chronod.config import Config
from chronod.dispatch import Scheduler
from chronod.errors import EXIT_FAILURE, EXIT_OK, StoreError, TransientError
from chronod.lock import LeaseKeeper
from chronod.logs import event
from chronod.metrics import ChronodMetrics
from chronod.notify import Notifier
from chronod.runtime import ConfigWatcher, Pool, PoolHooks, node_name, store_settings
from chronod.store import StoreSettings, open_store
from chronod.store.base import DispatchStatus, Fenced, Lease, RolledBack, Store
from chronod.telemetry import Episode, Telemetry, plural

log = logging.getLogger("chronod.daemon")

MAX_SLEEP = 5.0  # re-read store time at least this often, so drift between clocks cannot build up
# Plans for the next due instant are made ahead of it (Scheduler.prepare): twice the expected
# planning time of the jobs due then (PREPARE_PER_JOB each until measured), within these bounds
# (seconds).
PREPARE_MIN = 0.02
PREPARE_MAX = 10.0
PREPARE_PER_JOB = 50e-6
PREPARE_SAMPLE = 100  # jobs planned at once before their time is trusted as a per-job cost
PREPARE_CHUNK = 2000  # jobs of a crowded instant planned per pass (~20-30 ms)
BACKOFF = (0.5, 1.0, 2.0, 5.0)
# Dispatch decisions that write to the store (the others change nothing).
_WRITES = frozenset(
    {DispatchStatus.QUEUED, DispatchStatus.WAITING, DispatchStatus.SKIPPED, DispatchStatus.PAUSED}
)

# Re-exported: they lived here before chronod.runtime; web and test code still import them here.
__all__ = ["Daemon", "DaemonStores", "Flags", "Pool", "node_name", "store_settings"]


class Flags:
    """Requests from signal handlers, read by the loop, and the loop's wake-up.

    A handler must not take a lock. Python runs it in the main thread between two bytecodes, and
    so also while that thread holds a lock itself: inside ``Event.wait`` (the loop's sleep), or
    inside the same handler run for the previous signal (several children exiting at once send
    SIGCHLDs back to back). ``Event.set`` from a handler then waits forever for a lock its own
    thread holds: the daemon hung at stop with half its pool reaped, deaf to SIGTERM. So the
    requests are plain attributes and the wake-up is a self-pipe (:class:`Waker`), which the
    helper threads (lease keeper, sampler, event reader) poke as well.
    """

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self.waker = Waker()

    def wake(self) -> None:
        """Safe from any thread and from a signal handler."""
        self.waker.wake()


@dataclass(frozen=True)
class DaemonStores:
    """The daemon's store connections, one per thread that talks to the store: no connection (and
    no SQLite transaction) is shared between them."""

    main: Store  # the scheduler loop: dispatch, the stop announcement
    keeper: Store  # the lease keeper thread
    sampler: Store  # the telemetry sampler thread
    courier: Store  # the notification courier thread (chronod.alerts.courier)

    @classmethod
    def open(cls, settings: StoreSettings, clock: Clock) -> DaemonStores:
        """Open the four (stores connect lazily: a bad URL raises here, an outage later)."""
        return cls(*(open_store(settings, clock) for _ in range(4)))


class Daemon:
    def __init__(
        self,
        *,
        config: Config,
        stores: DaemonStores,
        clock: Clock,
        notifier: Notifier | None = None,
        pool_factory: Callable[[Config, PoolHooks], Pool | None] = lambda _config, _hooks: None,
        metrics: ChronodMetrics | None = None,
    ) -> None:
        self.watcher = ConfigWatcher(config, log)
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.flags = Flags()
        self.node = node_name()
        self.store = stores.main
        self.metrics = metrics
        self.telemetry = Telemetry(
            stores.sampler, clock=clock, metrics=metrics, scheduler=self.node
        )
        self.telemetry.configured(config.jobs)
        self.keeper = LeaseKeeper(
            stores.keeper,
            node=self.node,
            ttl=config.daemon.lease,
            clock=clock,
            on_change=lambda _: self.flags.wake(),
            on_store=self._keeper_store,
        )
        self.scheduler = Scheduler(self.store)
        # Delivers the outbox while this process leads, on a thread and connection of its own.
        self.courier = Courier(stores.courier, lambda: self.config, clock=clock, metrics=metrics)
        self.pool = pool_factory(config, self.telemetry.hooks)
        self._loaded_epoch: int | None = None
        self._failures = 0
        self._store_errors = Episode(clock.monotonic)  # only the first of a run gets a line
        self._per_job = PREPARE_PER_JOB  # seconds to plan one job, as last measured

    @property
    def config(self) -> Config:
        """The running config (the last valid one loaded)."""
        return self.watcher.config

    # -- signals ----------------------------------------------------------------------------------

    def install_signals(self) -> None:
        # Every caught signal wakes the loop through the wakeup fd; the handlers only set flags.
        self.flags.waker.wake_on_signals()
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if self.pool is not None:  # a worker child died: reap and respawn it now, not next pass
            signal.signal(signal.SIGCHLD, only_caught)

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        self.flags.reload = True

    def _on_stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.flags.stop = True

    # -- main loop --------------------------------------------------------------------------------

    def run(self) -> int:
        self.verify_store()
        event(
            log,
            logging.INFO,
            "chronod starting",
            node=self.node,
            store=self.store.describe(),
            jobs=len(self.config.jobs),
        )
        self.telemetry.start(wake=self.flags.wake)
        self.keeper.start()
        self.courier.start(leading=lambda: self.keeper.current() is not None)
        if self.pool is not None:
            self.pool.start()
        code = EXIT_OK
        try:
            while True:
                # Cleared before the flags are read, not before the wait: a signal or a store
                # transition arriving during this pass then shortens the wait instead of being lost.
                self.flags.waker.drain()
                if self.flags.stop:
                    break
                fatal = self.fatal()
                if fatal is not None:
                    event(log, logging.ERROR, f"{fatal}; exiting")
                    code = EXIT_FAILURE
                    break
                if self.flags.reload:
                    self.reload()
                delay = self.step()
                if self.pool is not None:
                    self.pool.check()
                    respawn = self.pool.next_check_in()
                    if respawn is not None:
                        delay = min(delay, respawn)
                self.report()
                watchdog = self.notifier.watchdog_interval()
                if watchdog is not None:
                    delay = min(delay, watchdog)
                self.flags.waker.wait(delay)
        finally:
            self.shutdown()
        return code

    def verify_store(self) -> None:
        """Refuse to start on a store that holds something unusable (raises StoreCorrupt). A store
        that cannot be reached now is not checked: the loop waits for it as for any outage."""
        try:
            self.store.verify()
        except TransientError as exc:
            event(log, logging.WARNING, f"store not verified at start: {exc}")

    def fatal(self) -> str | None:
        """Why the daemon must exit now (module docstring), or None."""
        if self.telemetry.fatal() is not None:
            return self.telemetry.fatal()
        if not self.keeper.alive():
            why = self.keeper.failure or "it ended"
            return f"the lease keeper thread stopped ({why}), so this node could never lead again"
        dead = self.telemetry.dead_thread()
        if dead is not None:
            return dead
        return None

    def _keeper_store(self, exc: StoreError | None) -> None:
        """The keeper's store requests: a committed write, or the error one failed with."""
        if exc is None:
            self.telemetry.health.wrote()
        else:
            self.telemetry.health.failed(exc)

    def step(self) -> float:
        """One pass: lead or not, tick, and say how long to sleep (seconds)."""
        lease = self.keeper.current()
        if lease is None:
            if self._loaded_epoch is not None:
                event(log, logging.INFO, "not leading: scheduler idle", epoch=self._loaded_epoch)
                self.scheduler.clear()
                self._loaded_epoch = None
            return 1.0
        try:
            if self._loaded_epoch != lease.epoch:
                self.scheduler.load(lease, self.config.jobs)
                self._loaded_epoch = lease.epoch
                event(
                    log,
                    logging.INFO,
                    "leading: jobs loaded",
                    epoch=lease.epoch,
                    jobs=len(self.config.jobs),
                )
            now = self.store.now()
            read_at = self.clock.monotonic()
            report = self.scheduler.tick(lease, now, between=self.keeper.renew_if_due)
            wake = self.scheduler.next_wake()
        except Fenced as exc:
            # Logged here as well as by the keeper: the keeper's renewal may have noticed first
            # (and logged the step-down), but a refused write is worth its own line.
            event(log, logging.WARNING, f"write refused by the store: {exc}", epoch=lease.epoch)
            self.keeper.fenced(lease, str(exc))
            self.scheduler.clear()
            self._loaded_epoch = None
            return 0.0
        except RolledBack as exc:
            # Our view of the jobs is ahead of the store's: load it again (slots the store lost
            # are then recorded 'uncertain', never run twice). The lease is still ours if the
            # store still holds it; if not, the next renewal says so.
            event(log, logging.WARNING, f"{exc}", epoch=lease.epoch)
            self.scheduler.clear()
            self._loaded_epoch = None
            return 0.0
        except StoreError as exc:
            return self._backoff(exc)
        self._failures = 0
        self._store_errors.succeeded()
        # Only decisions that wrote say the store accepts writes: a batch of duplicates commits
        # nothing, which even a full disk lets through.
        if report.missed or any(r.status in _WRITES for _, r in report.dispatched):
            self.telemetry.health.wrote()
        else:
            self.telemetry.health.ok()
        if self.metrics is not None:
            self.metrics.ticked(report)
        # ``now`` was read before the tick: the time the tick took is already gone from the wait
        # (without this a tick of many slots made the next one late by its own duration).
        spent = self.clock.monotonic() - read_at
        until_wake = MAX_SLEEP if wake is None else (wake - now).total_seconds() - spent
        if wake is not None:
            until_wake = self._prepare(now, wake, until_wake)
        return max(0.0, min(until_wake, MAX_SLEEP, self.keeper.seconds_left()))

    def _prepare(self, now: datetime, wake: datetime, until_wake: float) -> float:
        """Plan what is due soon shortly before it, so the ticks then only check and send.

        Two targets: the next wake, and the first crowded instant ahead (CROWD or more jobs due
        at once, within PREPARE_MAX), which may lie behind many small wakes — 20,000 crons at
        second 0 behind intervals due every millisecond would otherwise be planned in the last
        millisecond, i.e. at their tick. Planning starts twice the expected planning time ahead
        of a target; a crowded instant behind smaller ones is planned PREPARE_CHUNK jobs per pass,
        so a tick due meanwhile waits for one part at most. Returns the time to sleep
        (``until_wake`` at most).
        """
        started = self.clock.monotonic()
        sleep = until_wake
        crowded = self.scheduler.crowded(now + timedelta(seconds=PREPARE_MAX))
        if crowded is not None:
            ahead = until_wake + (crowded - wake).total_seconds() - self._lead(crowded)
            if ahead > 0:
                sleep = min(sleep, ahead)
            else:
                # In parts only when ticks are due before it (each part walks the heap again).
                limit = None if crowded == wake else PREPARE_CHUNK
                if self._planned(crowded, limit) == limit:
                    return 0.0  # more of it to plan, after the ticks due meanwhile
        prepared = self.scheduler.prepared_until
        if prepared is None or prepared < wake:
            lead = self._lead(wake)
            if until_wake > lead:
                sleep = min(sleep, until_wake - lead)
            else:
                self._planned(wake, None)
        return sleep - (self.clock.monotonic() - started)

    def _lead(self, at: datetime) -> float:
        """How long ahead of ``at`` to plan the jobs due then (seconds)."""
        return min(max(2 * self._per_job * self.scheduler.due_at(at), PREPARE_MIN), PREPARE_MAX)

    def _planned(self, at: datetime, limit: int | None) -> int:
        """Scheduler.prepare, timed: a large enough part updates the per-job planning time."""
        started = self.clock.monotonic()
        planned = self.scheduler.prepare(at, limit)
        if planned >= PREPARE_SAMPLE:
            self._per_job = (self.clock.monotonic() - started) / planned
        return planned

    def _backoff(self, exc: Exception) -> float:
        delay = BACKOFF[min(self._failures, len(BACKOFF) - 1)]
        # The first failure gets its own line (this leader stops dispatching); the outage itself
        # is logged once by the health tracker, and each retry only at debug level.
        level = logging.WARNING if self._store_errors.failed() else logging.DEBUG
        self._failures += 1
        event(log, level, f"store failed, not dispatching: {exc}", retry_in=delay)
        self.telemetry.health.failed(exc)
        return delay

    # -- reporting: systemd, metrics --------------------------------------------------------------

    def report(self) -> None:
        """Once per loop pass: leadership metrics, READY (once) or STATUS, the watchdog ping."""
        lease = self.keeper.current()
        if self.metrics is not None:
            self.metrics.leadership(lease, self.keeper.renew_failures)
        self.telemetry.announce(self.notifier, self.status_line(lease))
        self.telemetry.feed_watchdog(self.notifier)

    def reload(self) -> None:
        """SIGHUP: load the file again; keep the running config if the new one is invalid."""
        self.flags.reload = False
        self.notifier.reloading()
        config = self.watcher.reload(force=True)
        if config is not None:
            self._loaded_epoch = None  # resync (fingerprints, heap) on the next step
            if self.pool is not None:
                self.pool.reload(config)
            self.telemetry.configured(config.jobs)
            event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        self.telemetry.announce(self.notifier, self.status_line(), reloaded=True)

    def status_line(self, lease: Lease | None = None) -> str:
        """One line for systemd's STATUS: role and epoch, jobs, queue depth, or the outage."""
        lease = lease or self.keeper.current()
        leading = f"leader, epoch {lease.epoch}" if lease is not None else None
        return self.telemetry.status_line(
            plural(len(self.config.jobs), "job"),
            role=leading or self._standby(),
            # Writes can fail now and then while the lease still holds (a disk all but full).
            role_in_outage=leading or "not dispatching",
            store=self.store.describe(),
        )

    def _standby(self) -> str:
        sample = self.telemetry.sampler.latest
        leader = sample.leader if sample is not None else None
        return f"standby (leader {leader.node}, epoch {leader.epoch})" if leader else "standby"

    def shutdown(self) -> None:
        self.notifier.stopping()
        event(log, logging.INFO, "stopping: releasing the lease")
        self.keeper.stop(release=True)
        self.courier.stop()
        if self.pool is not None:
            self.pool.stop()
        self.telemetry.stop()  # no announcement as alive after the goodbye below
        try:
            self.store.announce(self.node, "scheduler", stopped=True)
        except StoreError as exc:  # listed until its entry expires, then forgotten anyway
            event(log, logging.DEBUG, f"could not announce the stop: {exc}")
        self.store.close()
        self.keeper.store.close()
        self.flags.waker.close()
        event(log, logging.INFO, "stopped")
