"""Workers: a small supervisor of N child processes, each running one run at a time (DESIGN §4).

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
    from any process. Each child opens its **own** store connection, then loops in
    :class:`Consumer`: claim → check the job against its own config → run the attempt
    (:mod:`chronod.runner`: the worker's fork server, :mod:`chronod._forkserver`, forks the run
    into its own session) → finish. The supervisor only starts, reaps and respawns:
    :meth:`WorkerPool.check` reaps children without blocking and respawns the ones that died, after
    a backoff that grows while they keep dying young. Children report their runs (started,
    finished) to the supervisor on a pipe, for ``--metrics``, and exit with a named code.

Signals (in each child)
    SIGTERM, or a first SIGINT: stop claiming; a running run may go on for up to ``drain_timeout``,
    then it is terminated (SIGTERM to its group, SIGKILL after ``kill_grace``) and handed back so
    another worker retries it without spending an attempt. A SIGINT while already stopping: kill
    the run now (SIGKILL) and hand it back. SIGHUP: reload the config file, and restart the fork
    server (call modules it imported are imported afresh), before the next claim.
    A child whose supervisor died stops as on SIGTERM (Linux: ``PR_SET_PDEATHSIG``; elsewhere the
    loop compares :func:`os.getppid` before each claim) and exits :data:`EXIT_ORPHANED`.

Config drift
    A run carries the digest of the job definition it was dispatched with. A child runs it only if
    its own config defines the job with the same digest; otherwise (after re-reading the config
    file once, in case only this worker is behind) it finishes the run as ``config-mismatch``,
    naming the job and host. Nothing from the store is ever executed: the command, call target,
    arguments, environment and cwd all come from the worker's own config.

Retries
    A failed or timed-out attempt with attempts left is retried at store time + ``retry_delay`` ·
    2^(attempt−1), capped at a day (or at ``retry_delay`` if larger), times a uniform jitter of
    ±15 % (so every delay is still longer than the previous one: 2 × 0.85 > 1.15).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from chronod._forkserver import ForkServer
from chronod._proc import (
    FORK_BLOCKED,
    Waker,
    become_subreaper,
    close_quietly,
    die_with_parent,
    open_pidfd,
    reap_strays,
    signal_name,
    signal_process,
    wait_readable,
)
from chronod.clock import Clock, SystemClock
from chronod.config import (
    QUEUE_NAME,
    Config,
    JobConfig,
    load_config,
    parse_config,
    unused_queues,
)
from chronod.errors import (
    EXIT_FAILURE,
    ConfigError,
    StoreConfigError,
    StoreCorrupt,
    StoreError,
    TransientError,
    UsageError,
)
from chronod.instants import format_utc
from chronod.logs import JSONFormatter, LogFormat, event
from chronod.logs import configure as configure_logs
from chronod.notify import Notifier
from chronod.runner import Ending, Report, RunInfo, StopRequest, Supervision, run_attempt
from chronod.runtime import Pool, PoolHooks, reload_config, store_settings
from chronod.store import StoreSettings, open_store
from chronod.store.base import AttemptResult, Claim, FinishStatus, Outcome, Store, WorkerInfo
from chronod.telemetry import Episode, EventWriter, Telemetry, plural

if TYPE_CHECKING:  # a worker child has no use for the metrics server: not imported there
    from chronod.metrics import ChronodMetrics

log = logging.getLogger("chronod.worker")

# Exit codes of a worker child (the supervisor logs them by name).
EXIT_OK = 0  # stopped on request (drained)
EXIT_CRASHED = 1  # an unexpected exception (Python's own exit code for one)
EXIT_ORPHANED = 3  # its supervisor died; it drained and left
EXIT_USAGE = 64  # EX_USAGE: started without readable settings (not by a supervisor)
EXIT_STORE_ERROR = 69  # EX_UNAVAILABLE: the store failed in a way that is not transient
EXIT_STORE_CORRUPT = 76  # EX_PROTOCOL: the store holds something unusable (corrupt, foreign)
EXIT_CONFIG = 78  # EX_CONFIG: the store settings or the config text are unusable
EXIT_NAMES = {
    EXIT_OK: "stopped",
    EXIT_CRASHED: "crashed",
    EXIT_ORPHANED: "orphaned",
    EXIT_USAGE: "bad settings",
    EXIT_STORE_ERROR: "store error",
    EXIT_STORE_CORRUPT: "store corrupt",
    EXIT_CONFIG: "bad store settings or config",
}
CHILD_MODULE = "chronod._workerchild"

DEFAULT_ATTEMPT_TTL = timedelta(seconds=30)
CLAIM_WAIT = 1.0  # seconds a claim blocks for work: bounds how long a stop request waits
REGISTER_EVERY = 5.0  # seconds between worker registrations (entries expire after a minute)
RETRY_JITTER = 0.15
MAX_RETRY_DELAY = timedelta(days=1)
STORE_BACKOFF = (0.5, 1.0, 2.0, 5.0)  # seconds, when the store is unavailable
FINISH_PATIENCE = 600.0  # seconds to keep trying to record a result before leaving it to the reaper
HAND_BACK_PATIENCE = 10.0  # seconds to keep trying to hand a run back while stopping
RESPAWN_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds, by consecutive early deaths
STABLE_AFTER = 30.0  # seconds: a child that lived this long died "late"; its backoff restarts
STOP_MARGIN = 10.0  # seconds past drain + kill grace before the supervisor SIGKILLs a child
POLL_CHILDREN = 0.05  # seconds between looks at stopping children when there are no pidfds


def retry_at(now: datetime, base: timedelta, attempt: int, rng: random.Random) -> datetime:
    """When attempt ``attempt + 1`` may start after attempt ``attempt`` failed (see module doc)."""
    cap = max(base, MAX_RETRY_DELAY).total_seconds()
    seconds = min(base.total_seconds() * 2.0 ** min(attempt - 1, 64), cap)
    return now + timedelta(seconds=seconds * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))


def default_concurrency() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# The config a worker runs from


class ConfigSource:
    """The worker's own config, re-read from its file on request (SIGHUP) or when it changed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stamp: tuple[int, int, int] | None = None  # unknown: the first refresh reads it

    @property
    def jobs(self) -> Mapping[str, JobConfig]:
        return self.config.jobs

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); True if a new config was loaded."""
        stamp = _stamp(self.config.path)
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        try:
            config = load_config(self.config.path)
        except ConfigError as exc:
            event(log, logging.ERROR, f"config reload refused, keeping the running config: {exc}")
            return False
        changed = _digests(config) != _digests(self.config)
        self.config = config
        if changed:
            event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        return changed


def _digests(config: Config) -> dict[str, str]:
    return {name: job.digest for name, job in config.jobs.items()}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


# --------------------------------------------------------------------------------------------------
# One worker child: the consumer loop


@dataclass(frozen=True, kw_only=True)
class ConsumerSettings:
    queues: tuple[str, ...] | None = ("default",)  # None: every queue the config names
    attempt_ttl: timedelta = DEFAULT_ATTEMPT_TTL
    drain_timeout: timedelta = timedelta(seconds=30)
    claim_wait: float = CLAIM_WAIT
    register_every: float = REGISTER_EVERY
    finish_patience: float = FINISH_PATIENCE
    store_backoff: tuple[float, ...] = STORE_BACKOFF  # seconds, while the store is unavailable

    @property
    def heartbeat_every(self) -> float:
        return self.attempt_ttl.total_seconds() / 3

    def to_json(self) -> dict[str, Any]:
        return {
            "queues": list(self.queues) if self.queues is not None else None,
            "attempt_ttl": self.attempt_ttl.total_seconds(),
            "drain_timeout": self.drain_timeout.total_seconds(),
            "claim_wait": self.claim_wait,
            "register_every": self.register_every,
            "finish_patience": self.finish_patience,
            "store_backoff": list(self.store_backoff),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConsumerSettings:
        queues = data["queues"]
        return cls(
            queues=tuple(queues) if queues is not None else None,
            attempt_ttl=timedelta(seconds=data["attempt_ttl"]),
            drain_timeout=timedelta(seconds=data["drain_timeout"]),
            claim_wait=float(data["claim_wait"]),
            register_every=float(data["register_every"]),
            finish_patience=float(data["finish_patience"]),
            store_backoff=tuple(float(d) for d in data["store_backoff"]),
        )


class Consumer:
    """Claims runs and executes them, one at a time, until asked to stop."""

    def __init__(
        self,
        store: Store,
        config: ConfigSource,
        settings: ConsumerSettings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        parent_pid: int | None = None,
        adopts_orphans: bool = False,
        events: EventWriter | None = None,
        sys_path: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.parent_pid = parent_pid
        # Only a subreaper's strays are its runs' leftovers; elsewhere (an embedding process, a
        # test) waiting for "any child" could steal another component's child.
        self.adopts_orphans = adopts_orphans
        self.events = events or EventWriter(None)  # run events for the supervisor's metrics
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}:{os.getpid()}"
        # Starts every run (started on first use; :meth:`run` starts it ahead of the first claim).
        # ``sys_path``: what ``call`` targets resolve against (the supervisor's; default ours).
        self.server = ForkServer(
            sys_path=sys_path,
            notice=lambda text: event(log, logging.WARNING, text, worker=self.worker_id),
        )
        self.stop = StopRequest()
        self.waker = Waker()
        self.orphaned = False
        self._reload = False
        self._running = 0
        self._next_register = 0.0
        self._outages = 0
        # Per store operation, its run of failures: only the first failure gets a line.
        self._failing: dict[str, Episode] = {}

    # -- control: safe to call from signal handlers ----------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop.terminate_at is not None

    def request_stop(self, *, immediate: bool = False) -> None:
        """Stop claiming; a running run gets ``drain_timeout`` (none if ``immediate``)."""
        now = self.clock.monotonic()
        if immediate:
            self.stop.kill = True
            self.stop.terminate_at = now
        elif self.stop.terminate_at is None:
            self.stop.terminate_at = now + self.settings.drain_timeout.total_seconds()
        self.waker.wake()

    def request_reload(self) -> None:
        self._reload = True
        self.waker.wake()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda _s, _f: self.request_stop())
        signal.signal(signal.SIGINT, lambda _s, _f: self.request_stop(immediate=self.stopping))
        signal.signal(signal.SIGHUP, lambda _s, _f: self.request_reload())

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        event(
            log,
            logging.INFO,
            "worker started",
            worker=self.worker_id,
            queues=",".join(self.queues()),
            store=self.store.describe(),
        )
        self.server.ensure()
        while not self.stopping:
            self.step()
        try:  # `chronod status` marks it stopped rather than listing it as alive for a minute
            self.store.announce(self.worker_id, "worker", stopped=True)
        except StoreError as exc:
            event(log, logging.DEBUG, f"could not announce the stop: {exc}", worker=self.worker_id)
        event(log, logging.INFO, "worker stopped", worker=self.worker_id)

    def step(self) -> Claim | None:
        """One claim (waiting up to ``claim_wait``) and, if one came, its whole attempt."""
        self._check_parent()
        if self._reload:
            self._reload = False
            self.config.refresh(force=True)
            # A new fork server: call modules it had imported are imported afresh, so a deploy
            # followed by a reload runs the new code (between runs: one run at a time).
            self.server.close()
            self.server.ensure()
        self._register()
        if self.adopts_orphans:
            # Leftovers of finished runs that escaped their group, now ours; or the fork server.
            for pid, status in reap_strays():
                self.server.reaped(pid, status)
        claim = self._claim()
        if claim is not None:
            self.handle(claim)
        return claim

    def queues(self) -> tuple[str, ...]:
        if self.settings.queues is not None:
            return self.settings.queues
        return tuple(sorted({job.queue for job in self.config.jobs.values()})) or ("default",)

    def _check_parent(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid and not self.orphaned:
            self.orphaned = True
            event(
                log, logging.WARNING, "supervisor gone: draining and exiting", worker=self.worker_id
            )
            self.request_stop()

    def _claim(self) -> Claim | None:
        token = secrets.token_hex(16)
        try:
            claim = self.store.claim(
                self.worker_id,
                self.queues(),
                token,
                self.settings.attempt_ttl,
                self.settings.claim_wait,
            )
        except TransientError as exc:
            self._outage(exc)
            return None
        finally:
            self._report_quarantined()
        self._outages = 0
        if self._store_ok("claim"):
            event(log, logging.INFO, "the store answers this worker again", worker=self.worker_id)
        return claim

    def _outage(self, exc: TransientError) -> None:
        backoff = self.settings.store_backoff
        delay = backoff[min(self._outages, len(backoff) - 1)]
        self._store_failed("claim", exc, "store failed, not claiming", retry_in=delay)
        self._outages += 1
        self.waker.wait(delay)

    def _store_failed(self, operation: str, exc: StoreError, what: str, **fields: object) -> None:
        """Log a failed store operation: the first failure of a run at WARNING, the rest at DEBUG
        (an outage is one line per operation, not one per retry); tell the supervisor."""
        level = logging.WARNING if self._episode(operation).failed() else logging.DEBUG
        event(log, level, f"{what}: {exc}", worker=self.worker_id, **fields)
        self.events.store(exc)

    def _store_ok(self, operation: str, *, wrote: bool = False) -> bool:
        """Record a store operation that worked; True if it ended a run of failures."""
        if wrote:
            self.events.store(None)
        return self._episode(operation).succeeded() is not None

    def _episode(self, operation: str) -> Episode:
        found = self._failing.get(operation)
        if found is None:
            found = self._failing[operation] = Episode(self.clock.monotonic)
        return found

    def _report_quarantined(self) -> None:
        """Malformed runs the store quarantined during the claim: one line and a metric each."""
        for found in self.store.drain_quarantined():
            event(
                log,
                logging.ERROR,
                f"quarantined run {found.run_id}: {found.problem} (never run; see "
                f"'chronod history --job {found.job}')",
                job=found.job,
                run_id=found.run_id,
                outcome="quarantined",
                worker=self.worker_id,
            )
            self.events.emit("quarantined", job=found.job)

    def _register(self, *, force: bool = False) -> None:
        now = self.clock.monotonic()
        if now < self._next_register and not force:
            return
        self._next_register = now + self.settings.register_every
        info = WorkerInfo(
            worker=self.worker_id,
            queues=self.queues(),
            seen_at=self.clock.now(),
            running=self._running,
            concurrency=1,
        )
        try:
            self.store.register_worker(info)
        except TransientError as exc:
            self._store_failed("register", exc, "could not register this worker")
            return
        self._store_ok("register", wrote=True)

    # -- one claim --------------------------------------------------------------------------------

    def handle(self, claim: Claim) -> None:
        """Refuse, run or hand back ``claim``, then record the attempt."""
        fields = self._fields(claim)
        job, refusal = self._job_for(claim)
        if job is None:
            event(log, logging.WARNING, f"refused: {refusal}", outcome="config-mismatch", **fields)
            result = AttemptResult(outcome=Outcome.CONFIG_MISMATCH, error=refusal)
            status = self._finish(claim, lambda: result, fields)
            self._report_finished(claim, result.outcome, status)
            return
        if self.stopping:
            self._hand_back(claim, fields)
            return
        self._running = 1
        try:
            report = run_attempt(
                job, self._info(claim), self._supervision(claim, fields), self.server
            )
        finally:
            self._running = 0
        self._conclude(claim, job, report, fields)

    def _job_for(self, claim: Claim) -> tuple[JobConfig | None, str]:
        run = claim.run
        job = self.config.jobs.get(run.job)
        if (job is None or job.digest != run.digest) and self.config.refresh():
            job = self.config.jobs.get(run.job)
        if job is None:
            return None, (
                f"unknown job {run.job!r} on host {self.host}: not defined in this "
                f"worker's config ({self.config.config.path})"
            )
        if job.digest != run.digest:
            return None, (
                f"job {run.job!r} on host {self.host}: definition differs from the "
                f"dispatcher's (digest {job.digest} here ≠ {run.digest} in the run)"
            )
        return job, ""

    def _info(self, claim: Claim) -> RunInfo:
        run = claim.run
        return RunInfo(
            job=run.job, run_id=run.run_id, slot=run.slot, attempt=claim.attempt, epoch=run.epoch
        )

    def _supervision(self, claim: Claim, fields: dict[str, object]) -> Supervision:
        def started(pid: int) -> None:
            # Lateness against this host's clock: exact with SQLite, approximate across hosts.
            ready = claim.run.not_before or claim.run.slot
            late = (self.clock.now() - ready).total_seconds()
            event(
                log, logging.INFO, "started", job_pid=pid, late_ms=round(late * 1000, 1), **fields
            )
            # No registration here: it would cost every run a store round trip; the periodic
            # one (also made from heartbeats) says "running" within ``register_every``.
            self.events.emit("started", job=claim.run.job, late=late)

        return Supervision(
            heartbeat=lambda: self._heartbeat(claim),
            heartbeat_every=self.settings.heartbeat_every,
            stop=self.stop,
            wake_fd=self.waker.read_fd,
            on_start=started,
            monotonic=self.clock.monotonic,
        )

    def _heartbeat(self, claim: Claim) -> bool:
        self._check_parent()
        self._register()
        try:
            alive = self.store.heartbeat(claim.run.run_id, claim.token, self.settings.attempt_ttl)
        except TransientError as exc:
            # Keep running: if the lease lapses meanwhile, the next heartbeat that gets through
            # says so (and the run is stopped then).
            fields = {k: v for k, v in self._fields(claim).items() if k != "worker"}
            self._store_failed("heartbeat", exc, "heartbeat failed, the run goes on", **fields)
            return True
        self._store_ok("heartbeat", wrote=alive)
        return alive

    def _conclude(
        self, claim: Claim, job: JobConfig, report: Report, fields: dict[str, object]
    ) -> None:
        if report.ending is Ending.LEASE_LOST:
            event(
                log,
                logging.WARNING,
                "attempt lease lost: result discarded (the run was reclaimed)",
                duration=_secs(report.duration),
                **fields,
            )
            return
        if report.ending is Ending.INTERRUPTED:
            event(
                log,
                logging.INFO,
                f"run stopped: {report.error}",
                duration=_secs(report.duration),
                **fields,
            )
            self._hand_back(claim, fields)
            return
        retry = report.outcome in (Outcome.FAILED, Outcome.TIMED_OUT) and (
            claim.attempt < claim.run.max_attempts
        )

        built: list[AttemptResult] = []

        def result() -> AttemptResult:
            # Store time, read on every try: a result recorded late must not retry early.
            when = None
            if retry:
                when = retry_at(self.store.now(), job.retry_delay, claim.attempt, self.rng)
            built.append(report.result(retry_at=when))
            return built[-1]

        status = self._finish(claim, result, fields)
        again = built[-1].retry_at if built and status is FinishStatus.RETRY else None
        outcome = report.outcome
        ran = report.ending in (Ending.EXITED, Ending.TIMED_OUT)
        self._report_finished(claim, outcome, status, report.duration if ran else None)
        level = logging.INFO if outcome is Outcome.SUCCEEDED else logging.WARNING
        event(
            log,
            level,
            "finished",
            outcome=outcome.value if outcome else None,
            duration=_secs(report.duration),
            exit_code=report.exit_code,
            status=status.value if status else "unrecorded",
            retry_at=format_utc(again) if again else None,
            error=report.error,
            **fields,
        )

    def _report_finished(
        self,
        claim: Claim,
        outcome: Outcome | None,
        status: FinishStatus | None,
        duration: float | None = None,
    ) -> None:
        self.events.emit(
            "finished",
            job=claim.run.job,
            outcome=outcome.value if outcome else None,
            recorded=status.value if status else None,
            duration=duration,
        )

    def _finish(
        self, claim: Claim, result: Callable[[], AttemptResult], fields: dict[str, object]
    ) -> FinishStatus | None:
        """Record the attempt, retrying while the store is unavailable (the token stays valid)."""
        patience = self.clock.monotonic() + self.settings.finish_patience
        for delay in _backoff(self.settings.store_backoff):
            try:
                status = self.store.finish(claim.run.run_id, claim.token, result())
            except TransientError as exc:
                self.events.store(exc)
                if self.stop.kill or self.clock.monotonic() + delay > patience:
                    event(
                        log,
                        logging.ERROR,
                        f"could not record the result, giving up: {exc}; "
                        "the run is retried after its attempt lease expires",
                        **fields,
                    )
                    return None
                event(
                    log,
                    logging.WARNING if self._episode("finish").failed() else logging.DEBUG,
                    f"could not record the result yet, retrying: {exc}",
                    retry_in=delay,
                    **fields,
                )
                self.waker.wait(delay)
                continue
            self._store_ok("finish", wrote=True)
            if status is FinishStatus.STALE:
                event(
                    log,
                    logging.WARNING,
                    "result refused: the attempt was reclaimed meanwhile",
                    **fields,
                )
            return status
        raise AssertionError("unreachable")  # pragma: no cover

    def _hand_back(self, claim: Claim, fields: dict[str, object]) -> None:
        patience = self.clock.monotonic() + HAND_BACK_PATIENCE
        for delay in _backoff(self.settings.store_backoff):
            try:
                returned = self.store.hand_back(claim.run.run_id, claim.token)
            except TransientError as exc:
                if self.clock.monotonic() + delay > patience:
                    event(
                        log,
                        logging.ERROR,
                        f"could not hand the run back: {exc}; it is "
                        "retried after its attempt lease expires",
                        **fields,
                    )
                    return
                self.waker.wait(delay)
                continue
            event(
                log,
                logging.INFO if returned else logging.WARNING,
                "handed back" if returned else "hand-back refused: the attempt was reclaimed",
                **fields,
            )
            return

    def _fields(self, claim: Claim) -> dict[str, object]:
        run = claim.run
        return {
            "job": run.job,
            "run_id": run.run_id,
            "slot": format_utc(run.slot),
            "attempt": claim.attempt,
            "epoch": run.epoch,
            "worker": self.worker_id,
        }

    def close(self) -> None:
        self.server.close()
        self.waker.close()


def _backoff(delays: tuple[float, ...]) -> Iterator[float]:
    yield from delays
    while True:
        yield delays[-1]


def _secs(value: float) -> float:
    return round(value, 3)


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
            with _settings_file(self._child_settings(mask)) as fd:
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
# A worker child: a program of its own (python -m chronod._workerchild FD)


@dataclass(frozen=True, kw_only=True)
class ChildSettings:
    """What a worker child is started with: JSON in a file its supervisor lets it inherit."""

    parent: int  # the supervisor's pid
    store: StoreSettings
    consumer: ConsumerSettings
    config_path: Path
    config_text: str | None  # None: read config_path
    events: int | None  # the run event pipe's write end (inherited), or None
    log_format: LogFormat
    log_level: int
    sys_path: tuple[str, ...]  # the supervisor's: ``call`` targets resolve against it
    mask: frozenset[int]  # the signal mask to run with once the handlers are installed

    def to_json(self) -> dict[str, Any]:
        store = self.store
        return {
            "parent": self.parent,
            "store": store.to_json(),
            "consumer": self.consumer.to_json(),
            "config_path": str(self.config_path),
            "config_text": self.config_text,
            "events": self.events,
            "log_format": self.log_format,
            "log_level": self.log_level,
            "sys_path": list(self.sys_path),
            "mask": sorted(self.mask),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChildSettings:
        store = data["store"]
        return cls(
            parent=int(data["parent"]),
            store=StoreSettings.from_json(store),
            consumer=ConsumerSettings.from_json(data["consumer"]),
            config_path=Path(data["config_path"]),
            config_text=data["config_text"],
            events=data["events"],
            log_format="json" if data["log_format"] == "json" else "human",
            log_level=int(data["log_level"]),
            sys_path=tuple(data["sys_path"]),
            mask=frozenset(int(sig) for sig in data["mask"]),
        )

    def load_config(self) -> Config:
        if self.config_text is None:
            return load_config(self.config_path)
        return parse_config(self.config_text.encode("utf-8"), self.config_path)


@contextlib.contextmanager
def _settings_file(settings: ChildSettings) -> Iterator[int]:
    """``settings`` in an unlinked file (nothing on disk, mode 0600); yields its descriptor.

    A file rather than a pipe: the supervisor writes it at once whatever its size (a large config),
    without waiting for the child to start reading; rather than argv: the store URL may hold a
    password, which argv would show to every user."""
    with tempfile.TemporaryFile() as handle:
        handle.write(json.dumps(settings.to_json()).encode())
        handle.flush()
        yield handle.fileno()


def _read_settings(fd: int) -> ChildSettings:
    with open(fd, "rb") as handle:
        handle.seek(0)
        return ChildSettings.from_json(json.loads(handle.read()))


def child_main(argv: Sequence[str]) -> int:
    """``python -m chronod._workerchild FD``: one worker child; returns its exit code.

    Started by :meth:`WorkerPool._spawn` with the signals it handles blocked: it installs its
    handlers, then unblocks them (a stop or reload sent while it started up is handled then)."""
    try:
        settings = _read_settings(int(argv[0]))
    except (IndexError, ValueError, KeyError, TypeError, OSError) as exc:
        print(f"chronod worker child: no usable settings ({exc!r})", file=sys.stderr)
        return EXIT_USAGE
    # Parent death = drain and leave. (Linux sends it when the *thread* that started us ends: the
    # pool is driven from the supervisor's main thread, which lives as long as the process.)
    die_with_parent(signal.SIGTERM)
    configure_logs(settings.log_format, settings.log_level)
    if os.getppid() != settings.parent:
        return EXIT_ORPHANED
    try:
        return _child(settings)
    except Exception:
        log.exception("worker child crashed")
        return EXIT_CRASHED


def _child(settings: ChildSettings) -> int:
    try:
        config = settings.load_config()
    except ConfigError as exc:
        for issue in exc.issues:
            event(log, logging.ERROR, f"worker child cannot load the config: {issue.format()}")
        return EXIT_CONFIG
    adopts = become_subreaper()
    try:
        store = open_store(settings.store)
    except StoreConfigError as exc:
        event(log, logging.ERROR, f"worker child cannot open the store: {exc}")
        return EXIT_CONFIG
    consumer = Consumer(
        store,
        ConfigSource(config),
        settings.consumer,
        parent_pid=settings.parent,
        adopts_orphans=adopts,
        events=EventWriter(settings.events),
        sys_path=settings.sys_path,
    )
    try:
        consumer.install_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, settings.mask)
        consumer.run()
    except StoreError as exc:
        # Not transient (those are retried in the loop): the supervisor respawns this child after
        # its backoff; a corrupt store also makes the supervisor itself exit (telemetry: fatal).
        event(
            log,
            logging.ERROR,
            f"worker child stopping on a store error: {exc}",
            worker=consumer.worker_id,
        )
        consumer.events.store(exc)
        return EXIT_STORE_CORRUPT if isinstance(exc, StoreCorrupt) else EXIT_STORE_ERROR
    finally:
        consumer.close()
        store.close()
    return EXIT_ORPHANED if os.getppid() != settings.parent else EXIT_OK


# --------------------------------------------------------------------------------------------------
# `chronod worker` in the foreground, and the pool embedded in `chronod run`


class Foreground:
    """``chronod worker``: run a pool until SIGTERM/SIGINT; SIGHUP reloads the config.

    For systemd (:mod:`chronod.notify`): ``READY=1`` once the store has answered, ``STATUS=`` with
    the pool and the queue depth (or the store outage), ``WATCHDOG=1`` from this loop while the
    process is healthy (:mod:`chronod.telemetry`), ``RELOADING=1``/``READY=1`` around a reload.
    """

    def __init__(
        self, pool: WorkerPool, telemetry: Telemetry, notifier: Notifier | None = None
    ) -> None:
        self.pool = pool
        self.telemetry = telemetry
        self.notifier = notifier or Notifier()
        self.waker = Waker()
        self.stop_requested = False
        self.reload_requested = False

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGCHLD, lambda _s, _f: self.waker.wake())  # a child died: reap now

    def _on_stop(self, sig: int, _frame: FrameType | None) -> None:
        if self.stop_requested and sig == signal.SIGINT:
            self.pool.interrupt()
        self.stop_requested = True
        self.waker.wake()

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        self.reload_requested = True
        self.waker.wake()

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
        pool = f"{plural(settings.concurrency, 'worker')} on {queues}"
        outage = self.telemetry.health.outage()
        if outage is not None:
            return f"{outage}; {pool}"
        if not self.telemetry.health.ever_up:
            return f"waiting for the store; {pool}"
        return f"{pool}; {self.telemetry.queued()}"

    def _reload(self) -> None:
        self.reload_requested = False
        self.notifier.reloading()
        config = reload_config(self.pool.config.path, self.pool.config, log)
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
