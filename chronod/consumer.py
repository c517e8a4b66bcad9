"""The consumer loop of one worker child: claim → check → run → record, one run at a time.

Execution semantics (leases, config-mismatch, outcomes): docs/design.md §4.

:class:`Consumer` runs in each worker child (:mod:`chronod._workerchild`; the pool that starts
the children is :mod:`chronod.worker`). It claims a run, checks the job against its own config,
runs the attempt (:mod:`chronod.runner`: the child's fork server, :mod:`chronod._forkserver`,
forks the run into its own session) and records the result, retrying while the store is down.

Signals (in each child)
    SIGTERM, or a first SIGINT: stop claiming; a running run may go on for up to ``drain_timeout``,
    then it is terminated (SIGTERM to its group, SIGKILL after ``kill_grace``) and handed back so
    another worker retries it without spending an attempt. A SIGINT while already stopping: kill
    the run now (SIGKILL) and hand it back (and stop waiting for a store that is down: see
    :meth:`Consumer._keep_trying`). SIGHUP: reload the config file, and restart the fork server
    (call modules it imported are imported afresh), before the next claim.
    A child whose supervisor died stops as on SIGTERM (Linux: ``PR_SET_PDEATHSIG``; elsewhere the
    loop compares :func:`os.getppid` before each claim) and exits ``EXIT_ORPHANED``.

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

import logging
import os
import random
import secrets
import signal
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from chronod._forkserver import ForkServer
from chronod._proc import Waker, reap_strays
from chronod.celery.publish import Publisher
from chronod.clock import Clock, SystemClock
from chronod.config import Config, JobConfig
from chronod.errors import StoreError, TransientError
from chronod.instants import format_utc
from chronod.logs import event
from chronod.runner import Ending, Report, RunInfo, StopRequest, Supervision, run_attempt
from chronod.runtime import ConfigWatcher
from chronod.store.base import AttemptResult, Claim, FinishStatus, Outcome, Store, WorkerInfo
from chronod.telemetry import Episode, EventWriter

log = logging.getLogger("chronod.worker")

DEFAULT_ATTEMPT_TTL = timedelta(seconds=30)
CLAIM_WAIT = 1.0  # seconds a claim blocks for work: bounds how long a stop request waits
REGISTER_EVERY = 5.0  # seconds between worker registrations (entries expire after a minute)
RETRY_JITTER = 0.15
MAX_RETRY_DELAY = timedelta(days=1)
STORE_BACKOFF = (0.5, 1.0, 2.0, 5.0)  # seconds, when the store is unavailable
FINISH_PATIENCE = 600.0  # seconds to keep trying to record a result before leaving it to the reaper
HAND_BACK_PATIENCE = 10.0  # seconds to keep trying to hand a run back while stopping

_T = TypeVar("_T")


def retry_at(now: datetime, base: timedelta, attempt: int, rng: random.Random) -> datetime:
    """When attempt ``attempt + 1`` may start after attempt ``attempt`` failed (see module doc)."""
    cap = max(base, MAX_RETRY_DELAY).total_seconds()
    seconds = min(base.total_seconds() * 2.0 ** min(attempt - 1, 64), cap)
    return now + timedelta(seconds=seconds * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))


class ConfigSource(ConfigWatcher):
    """A worker child's own config, re-read from its file on request (SIGHUP) or when it changed.

    Its first look always reads the file: the config it starts with is the text its supervisor
    accepted, which the file may no longer hold. ``[chronod]`` changes are the supervisor's to
    report, not each child's.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config, log, restart_note=False)

    @property
    def jobs(self) -> Mapping[str, JobConfig]:
        return self.config.jobs

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); True if a job definition changed."""
        before = _digests(self.config)
        config = self.reload(force=force)
        if config is None or _digests(config) == before:
            return False
        event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        return True


def _digests(config: Config) -> dict[str, str]:
    return {name: job.digest for name, job in config.jobs.items()}


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


@dataclass(frozen=True)
class _Recorded:
    """What :meth:`Consumer._finish` got the store to accept."""

    status: FinishStatus
    result: AttemptResult


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
        self.publisher = Publisher(lambda: self.config.config.daemon.celery, sys_path)
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

    def close(self) -> None:
        self.server.close()
        self.publisher.close()
        self.waker.close()

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
            self._refuse(claim, refusal, fields)
            return
        if self.stopping:
            self._hand_back(claim, fields)
            return
        self._running = 1
        try:
            watch = self._supervision(claim, fields)
            report = run_attempt(job, self._info(claim, job), watch, self.server, self.publisher)
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

    def _refuse(self, claim: Claim, refusal: str, fields: dict[str, object]) -> None:
        event(log, logging.WARNING, f"refused: {refusal}", outcome="config-mismatch", **fields)
        result = AttemptResult(outcome=Outcome.CONFIG_MISMATCH, error=refusal)
        recorded = self._finish(claim, lambda: result, fields)
        self._report_finished(claim, result.outcome, recorded)

    def _info(self, claim: Claim, job: JobConfig) -> RunInfo:
        run = claim.run
        # A jittered fire runs after its slot's nominal instant, which is what the job sees.
        slot = run.slot if run.manual else job.schedule.nominal(run.slot)
        return RunInfo(
            job=run.job, run_id=run.run_id, slot=slot, attempt=claim.attempt, epoch=run.epoch
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
        """After the attempt: discard it (lease lost), hand it back (interrupted) or record it."""
        duration = round(report.duration, 3)
        if report.ending is Ending.LEASE_LOST:
            event(
                log,
                logging.WARNING,
                "attempt lease lost: result discarded (the run was reclaimed)",
                duration=duration,
                **fields,
            )
            return
        if report.ending is Ending.INTERRUPTED:
            event(log, logging.INFO, f"run stopped: {report.error}", duration=duration, **fields)
            self._hand_back(claim, fields)
            return
        recorded = self._finish(claim, lambda: self._result(claim, job, report), fields)
        outcome = report.outcome
        ran = report.ending in (Ending.EXITED, Ending.TIMED_OUT)
        self._report_finished(claim, outcome, recorded, report.duration if ran else None)
        retrying = recorded is not None and recorded.status is FinishStatus.RETRY
        again = recorded.result.retry_at if recorded is not None and retrying else None
        event(
            log,
            logging.INFO if outcome in (Outcome.SUCCEEDED, Outcome.SENT) else logging.WARNING,
            "finished",
            outcome=outcome.value if outcome else None,
            duration=duration,
            exit_code=report.exit_code,
            status=recorded.status.value if recorded else "unrecorded",
            retry_at=format_utc(again) if again else None,
            error=report.error,
            **fields,
        )

    def _result(self, claim: Claim, job: JobConfig, report: Report) -> AttemptResult:
        """The attempt's result; a retry is timed from store time, read on every try to record
        it, so that a result recorded late does not retry early."""
        retry = report.outcome in (Outcome.FAILED, Outcome.TIMED_OUT) and (
            claim.attempt < claim.run.max_attempts
        )
        if not retry:
            return report.result()
        return report.result(retry_at(self.store.now(), job.retry_delay, claim.attempt, self.rng))

    def _report_finished(
        self,
        claim: Claim,
        outcome: Outcome | None,
        recorded: _Recorded | None,
        duration: float | None = None,
    ) -> None:
        self.events.emit(
            "finished",
            job=claim.run.job,
            outcome=outcome.value if outcome else None,
            recorded=recorded.status.value if recorded else None,
            duration=duration,
        )

    def _finish(
        self, claim: Claim, result: Callable[[], AttemptResult], fields: dict[str, object]
    ) -> _Recorded | None:
        """Record the attempt (``result()`` is built afresh for every try); None if given up."""

        def record() -> _Recorded:
            built = result()
            return _Recorded(self.store.finish(claim.run.run_id, claim.token, built), built)

        recorded = self._keep_trying(
            record, "record the result", self.settings.finish_patience, fields
        )
        if recorded is not None and recorded.status is FinishStatus.STALE:
            event(
                log,
                logging.WARNING,
                "result refused: the attempt was reclaimed meanwhile",
                **fields,
            )
        return recorded

    def _hand_back(self, claim: Claim, fields: dict[str, object]) -> None:
        returned = self._keep_trying(
            lambda: self.store.hand_back(claim.run.run_id, claim.token),
            "hand the run back",
            HAND_BACK_PATIENCE,
            fields,
        )
        if returned is not None:
            event(
                log,
                logging.INFO if returned else logging.WARNING,
                "handed back" if returned else "hand-back refused: the attempt was reclaimed",
                **fields,
            )

    def _keep_trying(
        self, write: Callable[[], _T], what: str, patience: float, fields: dict[str, object]
    ) -> _T | None:
        """``write()`` for the attempt, retried with backoff while the store is unavailable (the
        attempt's token stays valid meanwhile) for up to ``patience`` seconds, or until a stop
        says "now". None if it gave up: the run is then retried after its attempt lease expires.
        """
        give_up_at = self.clock.monotonic() + patience
        for delay in _backoff(self.settings.store_backoff):
            try:
                done = write()
            except TransientError as exc:
                self.events.store(exc)
                if self.stop.kill or self.clock.monotonic() + delay > give_up_at:
                    event(
                        log,
                        logging.ERROR,
                        f"could not {what}, giving up: {exc}; "
                        "the run is retried after its attempt lease expires",
                        **fields,
                    )
                    return None
                event(
                    log,
                    logging.WARNING if self._episode(what).failed() else logging.DEBUG,
                    f"could not {what} yet, retrying: {exc}",
                    retry_in=delay,
                    **fields,
                )
                self.waker.wait(delay)
                continue
            self._store_ok(what, wrote=True)
            return done
        raise AssertionError("unreachable")  # pragma: no cover

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


def _backoff(delays: tuple[float, ...]) -> Iterator[float]:
    yield from delays
    while True:
        yield delays[-1]
