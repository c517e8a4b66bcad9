"""Workers: a small supervisor of N child processes, each running one run at a time.

Execution semantics: docs/design.md §4.

Processes
    ``supervisor ─(fork+exec)→ worker child ─(fork+exec)→ fork server ─(fork)→ run``.
    :class:`WorkerPool` (the supervisor: ``chronod worker``, or embedded in ``chronod run``) starts
    N worker children as **new programs** (``python -m chronod._workerchild FD``), never as plain
    forks: the supervisor may run threads (the lease keeper, the store sampler, the run event
    reader) and hold SQLite connections, and a forked copy of such a process inherits their state
    (SQLite's in-process lock table, a module import lock held by another thread) without the
    threads that would release it. An exec'd child inherits nothing but what it is given: its
    settings as JSON in an unlinked file (store URL, consumer settings, the config text the
    supervisor accepted, log format, signal mask), the run event pipe, and the signals it handles
    blocked until its handlers are installed. So the supervisor can start a child at any time,
    from any process. Each child (:mod:`chronod._workerchild`) opens its **own** store connection,
    then loops in :class:`~chronod.consumer.Consumer` (:mod:`chronod.consumer`: claim → check the
    job against its own config → run the attempt → finish; its signals, config drift and retries
    are described there). The supervisor only starts, reaps and respawns: :meth:`WorkerPool.check`
    reaps children without blocking and respawns the ones that died, after a backoff that grows
    while they keep dying young. Children report their runs (started, finished) to the supervisor
    on a pipe, for ``--metrics``, and exit with a named code.

Stopping
    :meth:`WorkerPool.stop` sends every child SIGTERM and waits for each to exit (the drain
    timeout, the longest ``kill_grace`` and a margin), then SIGKILLs what is left. A SIGINT to the
    supervisor meanwhile is passed on: the children kill their runs now and hand them back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from chronod._proc import (
    FORK_BLOCKED,
    Waker,
    close_quietly,
    only_caught,
    open_pidfd,
    signal_name,
    signal_process,
    wait_readable,
)
from chronod._workerchild import (
    EXIT_CONFIG,
    EXIT_CRASHED,
    EXIT_NAMES,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_STORE_CORRUPT,
    EXIT_STORE_ERROR,
    EXIT_USAGE,
    ChildSettings,
    child_main,
    settings_file,
)
from chronod._workerchild import MODULE as CHILD_MODULE
from chronod.clock import Clock, SystemClock
from chronod.config import QUEUE_NAME, Config, unused_queues
from chronod.consumer import (
    CLAIM_WAIT,
    DEFAULT_ATTEMPT_TTL,
    MAX_RETRY_DELAY,
    ConfigSource,
    Consumer,
    ConsumerSettings,
    retry_at,
)
from chronod.errors import EXIT_FAILURE, StoreError, TransientError, UsageError
from chronod.logs import JSONFormatter, event
from chronod.notify import Notifier
from chronod.runtime import ConfigWatcher, Pool, PoolHooks, store_settings
from chronod.store import StoreSettings, open_store
from chronod.telemetry import Telemetry, plural

if TYPE_CHECKING:  # a worker child has no use for the metrics server: not imported there
    from chronod.metrics import ChronodMetrics

# Re-exported: they lived here before the consumer and the child had modules of their own.
__all__ = [
    "CHILD_MODULE",
    "EXIT_CONFIG",
    "EXIT_CRASHED",
    "EXIT_NAMES",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_STORE_CORRUPT",
    "EXIT_STORE_ERROR",
    "EXIT_USAGE",
    "MAX_RETRY_DELAY",
    "ChildSettings",
    "ConfigSource",
    "Consumer",
    "ConsumerSettings",
    "Foreground",
    "PoolSettings",
    "WorkerPool",
    "child_main",
    "default_concurrency",
    "embedded_pool_factory",
    "retry_at",
    "serve",
]

log = logging.getLogger("chronod.worker")

RESPAWN_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds, by consecutive early deaths
STABLE_AFTER = 30.0  # seconds: a child that lived this long died "late"; its backoff restarts
STOP_MARGIN = 10.0  # seconds past drain + kill grace before the supervisor SIGKILLs a child
POLL_CHILDREN = 0.05  # seconds between looks at stopping children when there are no pidfds


def default_concurrency() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# The supervisor


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    concurrency: int
    queues: tuple[str, ...] | None = ("default",)  # None: every queue the config names
    attempt_ttl: timedelta = DEFAULT_ATTEMPT_TTL
    drain_timeout: timedelta = timedelta(seconds=30)
    claim_wait: float = CLAIM_WAIT
    respawn_backoff: tuple[float, ...] = RESPAWN_BACKOFF

    def consumer(self) -> ConsumerSettings:
        return ConsumerSettings(
            queues=self.queues,
            attempt_ttl=self.attempt_ttl,
            drain_timeout=self.drain_timeout,
            claim_wait=self.claim_wait,
        )


@dataclass
class _Slot:
    """One place in the pool and the child currently filling it."""

    index: int
    popen: subprocess.Popen[bytes] | None = None
    born: float = 0.0
    failures: int = 0  # consecutive early deaths
    respawn_at: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None


@dataclass
class WorkerPool:
    """The supervisor (implements :class:`chronod.runtime.Pool`)."""

    config: Config
    store: StoreSettings
    settings: PoolSettings
    clock: Clock = field(default_factory=SystemClock)
    hooks: PoolHooks = field(default_factory=PoolHooks)
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False
    # The text of the config file as accepted (at start, at each reload): a child started later
    # runs this config even if the file has been edited since without a reload.
    config_text: str | None = field(default=None, repr=False)

    def start(self) -> None:
        self.stopping = False
        self.config_text = _read_text(self.config.path)
        self.slots = [_Slot(i) for i in range(self.settings.concurrency)]
        event(
            log,
            logging.INFO,
            "worker pool starting",
            concurrency=self.settings.concurrency,
            queues=",".join(self.settings.queues or ("(all configured)",)),
        )
        self.check()

    def pids(self) -> list[int]:
        return [pid for slot in self.slots if (pid := slot.pid) is not None]

    def check(self) -> None:
        """Reap dead children (never blocks) and respawn those whose backoff has passed."""
        now = self.clock.monotonic()
        for slot in self.slots:
            if slot.popen is not None:
                self._reap(slot, now)
            if slot.popen is None and not self.stopping and now >= slot.respawn_at:
                self._spawn(slot)

    def next_check_in(self) -> float | None:
        """Seconds until :meth:`check` has something to do that no signal announces (a respawn
        after its backoff); None when nothing is pending (a child's death is announced by
        SIGCHLD)."""
        if self.stopping:
            return None
        now = self.clock.monotonic()
        due = [s.respawn_at - now for s in self.slots if s.popen is None]
        return max(0.0, min(due)) if due else None

    def reload(self, config: Config) -> None:
        """Use ``config`` for children started from now on, and tell the running ones to reload."""
        self.config = config
        self.config_text = _read_text(config.path)
        for pid in self.pids():
            signal_process(pid, signal.SIGHUP)

    def interrupt(self) -> None:
        """Forward an impatient SIGINT: children kill their runs now and hand them back."""
        for pid in self.pids():
            signal_process(pid, signal.SIGINT)

    def stop(self) -> None:
        """SIGTERM every child and wait for them to drain; SIGKILL what outlives the deadline."""
        self.stopping = True
        pids = self.pids()
        if not pids:
            return
        event(
            log,
            logging.INFO,
            "worker pool stopping: draining",
            children=len(pids),
            drain_timeout=self.settings.drain_timeout.total_seconds(),
        )
        for pid in pids:
            signal_process(pid, signal.SIGTERM)
        grace = max((job.kill_grace for job in self.config.jobs.values()), default=timedelta())
        limit = (self.settings.drain_timeout + grace).total_seconds() + STOP_MARGIN
        with self._forwarding_sigint():
            self._wait_all(self.clock.monotonic() + limit)
        for slot in self.slots:
            if slot.popen is not None:
                event(
                    log,
                    logging.ERROR,
                    "worker child did not stop in time: killing it",
                    child_pid=slot.popen.pid,
                )
                slot.popen.kill()
                self._exited(slot, slot.popen.wait(), self.clock.monotonic())
        event(log, logging.INFO, "worker pool stopped")

    # -- children ---------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        # Blocked in the child until its handlers are installed (see FORK_BLOCKED); the child
        # restores this mask, ours, afterwards.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            with settings_file(self._child_settings(mask)) as fd:
                passed = (fd,) if self.hooks.events is None else (fd, self.hooks.events)
                slot.popen = subprocess.Popen(
                    [sys.executable, "-m", CHILD_MODULE, str(fd)],
                    stdin=subprocess.DEVNULL,
                    pass_fds=passed,
                )
        except OSError as exc:
            slot.respawn_at = self.clock.monotonic() + self._backoff(slot)
            event(log, logging.ERROR, f"cannot start a worker child: {exc}", slot=slot.index)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        slot.born = self.clock.monotonic()

    def _child_settings(self, mask: Iterable[int]) -> ChildSettings:
        root = logging.getLogger("chronod")
        json_logs = any(isinstance(h.formatter, JSONFormatter) for h in root.handlers)
        return ChildSettings(
            parent=os.getpid(),
            store=self.store,
            consumer=self.settings.consumer(),
            config_path=self.config.path,
            config_text=self.config_text,
            events=self.hooks.events,
            log_format="json" if json_logs else "human",
            log_level=root.getEffectiveLevel(),
            sys_path=tuple(sys.path),
            mask=frozenset(int(sig) for sig in mask),
        )

    def _reap(self, slot: _Slot, now: float) -> None:
        assert slot.popen is not None
        code = slot.popen.poll()  # reaped elsewhere: 0, the status is lost
        if code is not None:
            self._exited(slot, code, now)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        pid = slot.pid
        slot.popen = None
        reason = EXIT_NAMES.get(code, f"killed by {signal_name(-code)}" if code < 0 else "?")
        if self.stopping:
            event(
                log,
                logging.INFO,
                "worker child exited",
                child_pid=pid,
                exit_code=code,
                reason=reason,
            )
            return
        if now - slot.born >= STABLE_AFTER:
            slot.failures = 0
        delay = self._backoff(slot)
        slot.respawn_at = now + delay
        event(
            log,
            logging.WARNING,
            "worker child died: respawning",
            child_pid=pid,
            exit_code=code,
            reason=reason,
            respawn_in=delay,
        )

    def _backoff(self, slot: _Slot) -> float:
        backoff = self.settings.respawn_backoff
        delay = backoff[min(slot.failures, len(backoff) - 1)]
        slot.failures += 1
        return delay

    def _wait_all(self, deadline: float) -> None:
        pidfds = {
            slot.index: open_pidfd(pid) for slot in self.slots if (pid := slot.pid) is not None
        }
        try:
            while True:
                now = self.clock.monotonic()
                for slot in self.slots:
                    if slot.popen is not None:
                        self._reap(slot, now)
                live = [s for s in self.slots if s.popen is not None]
                if not live or now >= deadline:
                    return
                fds = [fd for s in live if (fd := pidfds.get(s.index)) is not None]
                cap = 1.0 if len(fds) == len(live) else POLL_CHILDREN
                wait_readable(fds, min(deadline - now, cap))
        finally:
            for fd in pidfds.values():
                close_quietly(fd)

    @contextlib.contextmanager
    def _forwarding_sigint(self) -> Iterator[None]:
        """While stopping, a SIGINT to the supervisor means "now" for the children too."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda _s, _f: self.interrupt())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _read_text(path: Path) -> str | None:
    """The config file's text; None if it cannot be read now (a child then reads the file)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        event(log, logging.WARNING, f"cannot keep a copy of the config for new children: {exc}")
        return None


# --------------------------------------------------------------------------------------------------
# `chronod worker` in the foreground, and the pool embedded in `chronod run`


class Foreground:
    """``chronod worker``: run a pool until SIGTERM/SIGINT; SIGHUP reloads the config.

    For systemd (:mod:`chronod.notify`): ``READY=1`` once the store has answered, ``STATUS=`` with
    the pool and the queue depth (or the store outage), ``WATCHDOG=1`` from this loop while the
    process is healthy (:mod:`chronod.telemetry`), ``RELOADING=1``/``READY=1`` around a reload.
    """

    def __init__(
        self,
        pool: WorkerPool,
        telemetry: Telemetry,
        notifier: Notifier | None = None,
        config: ConfigWatcher | None = None,
    ) -> None:
        self.pool = pool
        self.telemetry = telemetry
        self.notifier = notifier or Notifier()
        self.config = config or ConfigWatcher(pool.config, log)
        self.waker = Waker()
        self.stop_requested = False
        self.reload_requested = False

    def install_signals(self) -> None:
        # Every caught signal wakes the loop through the wakeup fd; the handlers only set flags.
        self.waker.wake_on_signals()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGCHLD, only_caught)  # a child died: reap now

    def _on_stop(self, sig: int, _frame: FrameType | None) -> None:
        if self.stop_requested and sig == signal.SIGINT:
            self.pool.interrupt()
        self.stop_requested = True

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        self.reload_requested = True

    def run(self) -> int:
        self.telemetry.start(wake=self.waker.wake)
        self.pool.start()
        code = EXIT_OK
        try:
            while not self.stop_requested:
                # A corrupt store, or a helper thread that died: waiting cannot fix either (see
                # chronod.telemetry); exit and let the service manager decide.
                fatal = self.telemetry.fatal() or self.telemetry.dead_thread()
                if fatal is not None:
                    event(log, logging.ERROR, f"{fatal}; exiting")
                    code = EXIT_FAILURE
                    break
                if self.reload_requested:
                    self._reload()
                self.pool.check()
                self.telemetry.announce(self.notifier, self.status_line())
                self.telemetry.feed_watchdog(self.notifier)
                respawn = self.pool.next_check_in()
                wait = min(
                    1.0 if respawn is None else respawn, self.notifier.watchdog_interval() or 1.0
                )
                self.waker.wait(wait)
        finally:
            self.notifier.stopping()
            self.pool.stop()
            self.telemetry.stop()
            self.waker.close()
        return code

    def status_line(self) -> str:
        settings = self.pool.settings
        queues = ",".join(settings.queues or ("all queues",))
        return self.telemetry.status_line(f"{plural(settings.concurrency, 'worker')} on {queues}")

    def _reload(self) -> None:
        self.reload_requested = False
        self.notifier.reloading()
        config = self.config.reload(force=True)
        if config is not None:
            _warn_unused_queues(config, self.pool.settings.queues)
            self.pool.reload(config)
            self.telemetry.configured(config.jobs)
            event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        self.telemetry.announce(self.notifier, self.status_line(), reloaded=True)


def serve(
    config: Config,
    store_override: str | None,
    *,
    concurrency: int | None = None,
    queues: tuple[str, ...] = (),
    metrics: ChronodMetrics | None = None,
) -> int:
    """``chronod worker``: validate the arguments, then run a pool in the foreground."""
    for queue in queues:
        if not QUEUE_NAME.match(queue):
            raise UsageError(f"--queue {queue!r}: a queue name uses letters, digits, '_', '.', '-'")
    _warn_unused_queues(config, tuple(dict.fromkeys(queues)) or ("default",))
    settings = store_settings(config, store_override)
    # A bad URL fails here, once (stores connect lazily). The supervisor's own connection is the
    # sampler's (queue depth for STATUS and metrics); each child opens its own.
    store = open_store(settings)
    try:  # a corrupt or foreign store: one line and exit 1, before any child starts
        store.verify()
    except TransientError as exc:  # unreachable now: the pool waits for it like for any outage
        event(log, logging.WARNING, f"store not verified at start: {exc}")
    except StoreError:
        store.close()
        raise
    telemetry = Telemetry(store, clock=SystemClock(), metrics=metrics)
    telemetry.configured(config.jobs)
    pool = WorkerPool(
        config=config,
        store=settings,
        settings=PoolSettings(
            concurrency=concurrency or default_concurrency(),
            queues=tuple(dict.fromkeys(queues)) or ("default",),
            attempt_ttl=config.daemon.attempt_lease,
            drain_timeout=config.daemon.drain_timeout,
        ),
        hooks=telemetry.hooks,
    )
    foreground = Foreground(pool, telemetry)
    foreground.install_signals()
    return foreground.run()


def _warn_unused_queues(config: Config, queues: tuple[str, ...] | None) -> None:
    warning = unused_queues(config, queues or ())
    if warning is not None:
        event(log, logging.WARNING, warning)


def embedded_pool_factory(
    workers: int | None, store_override: str | None
) -> Callable[[Config, PoolHooks], Pool | None]:
    """``chronod run --workers N``: the pool the daemon supervises (N=0: none).

    N defaults to ``[chronod] workers``, else the CPU count. The embedded pool serves every queue
    the config names, so a single-host setup runs all its jobs; hosts that should not run some
    queues run the scheduler with ``--workers 0`` and separate ``chronod worker --queue`` pools.
    """

    def build(config: Config, hooks: PoolHooks) -> Pool | None:
        size = workers if workers is not None else config.daemon.workers
        size = default_concurrency() if size is None else size
        if size <= 0:
            return None
        settings = PoolSettings(
            concurrency=size,
            queues=None,
            attempt_ttl=config.daemon.attempt_lease,
            drain_timeout=config.daemon.drain_timeout,
        )
        return WorkerPool(
            config=config,
            store=store_settings(config, store_override),
            settings=settings,
            hooks=hooks,
        )

    return build
