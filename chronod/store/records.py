"""The records of the store contract: what goes into a :class:`~chronod.store.base.Store` (``Store``
below) and what comes out of it. Plain frozen values; what they mean is specified by the methods
that take and return them, in :mod:`chronod.store.base`, which re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

Overlap = Literal["skip", "queue", "allow"]
Role = Literal["scheduler", "worker"]
When = Literal["succeeded", "failed", "finished"]

# The most of a run's output a store keeps: the tail, in bytes of UTF-8.
OUTPUT_TAIL = 64 * 1024
# The most events the outbox holds (beyond it the oldest are dropped, and counted), and the most
# of a run's output an event carries: 10,000 events of at most ~5 KB each.
MAX_OUTBOX = 10_000
EVENT_OUTPUT = 4 * 1024


class Outcome(str, Enum):
    """Terminal outcome of a run (and of each history entry)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    LOST = "lost"
    SKIPPED = "skipped"
    MISSED = "missed"
    CONFIG_MISMATCH = "config-mismatch"
    QUARANTINED = "quarantined"  # a malformed stored run, never executed ("Malformed records")
    # The store lost the window this slot or run falls in (a rollback): it may or may not have run,
    # and it is never run again.
    UNCERTAIN = "uncertain"
    # A celery job's message was handed to the broker; what the Celery worker did is recorded by
    # the hook (chronod.celery.hook), or unknown without it (docs/celery.md).
    SENT = "sent"
    # A celery job's task failed and Celery will try it again (Task.retry; docs/celery.md).
    RETRIED = "retried"


class RunState(str, Enum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"


class DispatchStatus(str, Enum):
    QUEUED = "queued"  # run created and put on its queue
    WAITING = "waiting"  # overlap=queue and an earlier run is active: held, queued when it ends
    SKIPPED = "skipped"  # overlap=skip and an earlier run is active: recorded as skipped
    PAUSED = "paused"  # the job is paused: slot consumed, nothing recorded
    DUPLICATE = "duplicate"  # the slot's guard exists: dispatched before (maybe by this very call)
    STALE = "stale"  # slot <= watermark: decided before, or before the definition was loaded
    EARLY = "early"  # slot is after store time: not due yet
    UNKNOWN_JOB = "unknown-job"  # no job state (sync_jobs first) or fingerprint mismatch
    UNCERTAIN = "uncertain"  # in a window the store lost (rollback): recorded uncertain, not run


class FinishStatus(str, Enum):
    ACCEPTED = "accepted"  # recorded (or recorded before by the same attempt)
    RETRY = "retry"  # recorded as an attempt; the run is queued again at retry_at
    STALE = "stale"  # the token is not the run's current attempt: result discarded


@dataclass(frozen=True, kw_only=True)
class Lease:
    token: str = field(repr=False)
    epoch: int
    node: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class LeaderInfo:
    node: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class JobSync:
    """One job as the leader loaded it: see :meth:`Store.sync_jobs`."""

    name: str
    fingerprint: str
    next_due: datetime | None  # first slot strictly after the load instant


@dataclass(frozen=True, kw_only=True)
class JobState:
    name: str
    fingerprint: str  # "" once retired (removed from the config)
    watermark: datetime | None
    last_slot: datetime | None  # scheduled instant of the last dispatched slot
    next_due: datetime | None
    paused: bool = False
    last_outcome: Outcome | None = None
    last_outcome_at: datetime | None = None
    last_success_at: datetime | None = None
    active: int = 0  # runs of this job that are queued, waiting or running
    missed: int = 0  # slots missed since the state was created (counter)


@dataclass(frozen=True, kw_only=True)
class SlotDispatch:
    """One slot the leader wants to run: see :meth:`Store.dispatch`.

    ``superseded_by`` (a run id) marks a slot the leader decided not to run because a newer slot
    of the same job, due in the same tick, runs instead (overlap ``skip``: see
    :mod:`chronod.dispatch`); the store records it as skipped with that reason.
    """

    job: str
    fingerprint: str
    slot: datetime
    next_due: datetime | None  # the job's next slot after this one
    queue: str
    digest: str  # JobConfig.digest: workers refuse a run whose digest differs from their own
    overlap: Overlap
    max_attempts: int
    guard_ttl: timedelta
    superseded_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class MissedSlots:
    """One job's slots the leader will not run: the arguments of :meth:`Store.advance`, for
    :meth:`Store.advance_many`."""

    job: str
    fingerprint: str
    missed: tuple[datetime, ...]
    missed_count: int
    next_due: datetime | None


@dataclass(frozen=True, kw_only=True)
class DispatchResult:
    status: DispatchStatus
    run_id: str | None = None
    # Store time of the decision (lateness = this - slot); for DUPLICATE, of the first decision,
    # so that a retried batch gets the answer its first call got.
    dispatched_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A run: live (state is a :class:`RunState`) or history (state is an :class:`Outcome`)."""

    run_id: str
    job: str
    slot: datetime
    manual: bool
    state: RunState | Outcome
    queue: str
    digest: str
    epoch: int  # epoch of the leader that dispatched it (0 for manual runs)
    attempt: int  # attempts started so far (0 until first claimed)
    max_attempts: int
    created_at: datetime
    not_before: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    exit_code: int | None = None
    output: str = ""
    error: str | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def upstream_run_id(self) -> str | None:
        """The run whose end started this one (a job with ``after``), else None."""
        return upstream_of(self.run_id)


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A run handed to one worker for one attempt; ``token`` must accompany heartbeat and finish."""

    run: RunRecord
    token: str = field(repr=False)
    attempt: int
    lease_expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class AttemptResult:
    """What a worker reports at the end of an attempt."""

    outcome: Outcome  # SUCCEEDED, FAILED, TIMED_OUT, CONFIG_MISMATCH (QUARANTINED: see claim)
    exit_code: int | None = None
    output: str = ""  # tail, at most OUTPUT_TAIL bytes of UTF-8
    error: str | None = None
    retry_at: datetime | None = None  # for FAILED/TIMED_OUT with attempts left: when to try again


# How long a run's external execution record is kept (Store.begin_external): longer than any
# broker keeps a message (Celery's Redis visibility timeout is an hour; expires is the grace).
EXTERNAL_TTL = timedelta(days=7)


@dataclass(frozen=True, kw_only=True)
class ExternalRun:
    """One execution of a run by a system outside chronod (a Celery worker; docs/celery.md).

    The run's identity as its message carried it, plus ``try_no`` (the other system's own retry
    count: Celery's ``request.retries``, 0 for the message chronod published) and ``executor``,
    which names this one execution (unique per delivery, e.g. ``host:pid:random``).
    """

    run_id: str
    job: str
    slot: datetime
    attempt: int
    epoch: int
    queue: str
    try_no: int
    executor: str


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    worker: str  # "host:pid"
    queues: tuple[str, ...]
    seen_at: datetime
    running: int
    concurrency: int


@dataclass(frozen=True, kw_only=True)
class Presence:
    """A chronod process as it last announced itself: see :meth:`Store.announce`."""

    member: str  # "host:pid"
    role: Role
    seen_at: datetime  # store time of the announcement
    stopped: bool = False  # it said goodbye: stopped cleanly


@dataclass(frozen=True, kw_only=True)
class Quarantined:
    """A malformed run a store quarantined (see "Malformed records" in the contract)."""

    run_id: str
    job: str
    problem: str  # what was wrong, one line


# Outcomes after which a success is ``recovered`` (Store.set_event_kinds).
UNSUCCESSFUL = frozenset(
    ("failed", "timed-out", "lost", "config-mismatch", "quarantined", "uncertain")
)


@dataclass(frozen=True, kw_only=True)
class OutboxEvent:
    """A notification waiting in the outbox: see :meth:`Store.events_due`."""

    event_id: str  # "<run id>#<attempt>:<kind>": stable, the receivers' idempotency key
    kind: str  # an Outcome value, "recovered", or "started" (run: the running run)
    run: RunRecord  # the history entry that caused it (output: at most EVENT_OUTPUT bytes)
    created_at: datetime
    attempts: int = 0  # delivery attempts so far
    done: tuple[str, ...] = ()  # targets it was delivered to already

    @property
    def job(self) -> str:
        return self.run.job


@dataclass(frozen=True, kw_only=True)
class OutboxStats:
    depth: int  # events waiting
    dropped: int  # events dropped because the outbox was full (a counter, since creation)


@dataclass(frozen=True, kw_only=True)
class ChannelDelivery:
    """The last delivery over a notification channel (Store.note_delivery); never a secret."""

    channel: str
    last_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


# -- chains (Store.set_chains) ---------------------------------------------------------------------

# The final outcomes of an upstream run that start a downstream run, per ``when``. ``failed``
# is every end of a run that ran and did not succeed; what never ran (skipped, missed, paused,
# uncertain, config-mismatch, quarantined) and what is not final (a retry; a celery job's
# ``sent`` and ``retried``) starts nothing.
CHAIN_OUTCOMES: dict[str, frozenset[str]] = {
    "succeeded": frozenset({"succeeded"}),
    "failed": frozenset({"failed", "timed-out", "lost"}),
    "finished": frozenset({"succeeded", "failed", "timed-out", "lost"}),
}
# Between a chained run's own part and the job it follows: see :func:`chained_run_id`.
AFTER_MARK = "~after~"


@dataclass(frozen=True, kw_only=True)
class ChainLink:
    """A job that runs after another: see :meth:`Store.set_chains`."""

    job: str  # the downstream job
    upstream: str
    when: When
    queue: str
    digest: str
    overlap: Overlap
    max_attempts: int


def chained_run_id(job: str, upstream_run_id: str, upstream: str) -> str:
    """The run id of ``job``'s run after the run ``upstream_run_id`` of job ``upstream``:
    ``load@2027-01-01T09:00:00Z~after~extract`` follows ``extract@2027-01-01T09:00:00Z``.

    One id per upstream run, so two upstreams with the same slot never collide, and the upstream
    run id can be read back from it (:func:`upstream_of`: job names hold no ``@`` or ``~``).
    """
    return f"{job}@{upstream_run_id[len(upstream) + 1 :]}{AFTER_MARK}{upstream}"


def upstream_of(run_id: str) -> str | None:
    """The upstream run id a chained run id names (:func:`chained_run_id`), else None."""
    head, mark, upstream = run_id.rpartition(AFTER_MARK)
    _, at, rest = head.partition("@")
    if not mark or not at or not upstream or "@" in upstream:
        return None
    return f"{upstream}@{rest}"


def superseded_reason(run_id: str) -> str:
    """The history reason of a slot skipped in favour of ``run_id`` (SlotDispatch.superseded_by)."""
    return f"superseded by {run_id}: slots that came due together run once (overlap = skip)"


def overlap_reason(run_id: str, state: str) -> str:
    """The history reason of a slot skipped because the job's run ``run_id`` is still active."""
    return f"previous run {run_id} still {state} (overlap = skip)"


def redacted(info: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``info`` without secret-looking keys (for logs and status output)."""
    return {
        k: ("***" if "pass" in k.lower() or "token" in k.lower() else v) for k, v in info.items()
    }
