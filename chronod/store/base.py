"""The store contract. These docstrings are the specification; SQLite, Redis and PostgreSQL
implement it thinly.

The design behind it (lease and fencing, per-slot guard, the stores): docs/design.md §5.

The records the methods take and return live in :mod:`chronod.store.records` and are re-exported
here, so ``from chronod.store.base import ...`` reaches the whole contract.

Vocabulary
----------
*store time*
    The store's clock (Redis ``TIME``; PostgreSQL ``clock_timestamp()``; the host clock for
    SQLite). Every "now" below is store time,
    read inside the same atomic step that uses it. Callers never pass "now".
*lease*
    Leadership: a random ``token`` plus an ``epoch`` that grows by one at every acquisition (and
    never repeats: a store that lost its latest acquisitions hands out epochs above any a running
    process has seen, see "Durability and rollback"). Every leader write (``sync_jobs``,
    ``retire_jobs``, ``dispatch``, ``advance``) verifies token, epoch and expiry inside its own
    atomic step and is refused with :class:`Fenced` otherwise; a paused or partitioned ex-leader
    therefore cannot write, whatever its own clock says.
*watermark*
    Per job: no slot at or before it is ever dispatched. It only moves forward: to each slot decided
    (dispatched, skipped, missed, paused) and to the load instant when a definition is new or
    edited.
*guard*
    Per slot ``(job, slot)``: written by the dispatch that decided the slot; a second dispatch of
    the same slot is refused as :attr:`DispatchStatus.DUPLICATE`. Guards live at least
    ``max(24 h, 2 periods)`` (``SlotDispatch.guard_ttl``); past that the watermark alone protects.
*run*
    One execution request: a scheduled slot or a manual trigger. ``run_id`` is the slot id
    (``NAME@2026-11-27T14:30:00Z``) for scheduled runs and ``NAME@<store time>~manual`` for manual
    ones; it is stable across attempts, so jobs use it as their idempotency key.
*attempt*
    One claim of a run by a worker, identified by a fresh ``token`` (the attempt lease). Heartbeats
    extend it; a run whose attempt lease expired is reclaimed (next attempt, or ``lost`` when none
    is left). Writes with a token that is not the run's current one are refused: a stale worker's
    late result never counts.

Run states
----------
``queued`` (in its queue, ready at ``not_before``) → ``running`` (claimed) → a terminal outcome, or
back to ``queued`` with a later ``not_before`` for a retry. ``waiting`` (overlap ``queue``: held
until the job's active run ends, then ``queued``). Terminal outcomes are :class:`Outcome` values; a
terminal run leaves the live set and is kept in the job's history (the newest ``history`` entries
per job).

Malformed records
-----------------
Anyone with write access to the store can leave a run that chronod cannot read (a field missing,
of the wrong type, or out of range). No method ever fails because of one, and none ever runs one:

* :meth:`Store.claim` *quarantines* a malformed live run it meets instead of claiming it: the run
  ends with outcome ``quarantined`` (a history entry whose ``error`` says what was wrong, the
  job's last outcome, its waiting successor released, as in :meth:`Store.finish`), is reported by
  :meth:`Store.drain_quarantined`, and the claim goes on with the next ready run. A store may also
  sweep malformed runs that are not ready (they would count as the job's active run forever).
* Reads (:meth:`Store.live_runs`, :meth:`Store.history`, :meth:`Store.run`) return a malformed
  record as a :class:`RunRecord` with state ``quarantined``, the fields that could be read (others
  empty, an unreadable slot as the Unix epoch) and ``error`` naming the problem, so history and
  status keep answering.

Outbox
------
A job's *event kinds* (:meth:`Store.set_event_kinds`) say which of its runs' ends are news. When a
run ends with a terminal outcome (:meth:`Store.finish` accepted, :meth:`Store.reap` lost, a run
quarantined or ended ``uncertain`` by a claim or reap) and its job's kinds name that outcome, an
event is appended to the outbox *in the same atomic step*, so it survives the process that recorded
the outcome; a ``succeeded`` run whose job's previous last outcome was unsuccessful
(:data:`UNSUCCESSFUL`) makes a ``recovered`` event instead when the kinds name ``recovered``. At
most one event per run end: the id ``<run id>#<attempt>:<kind>`` is stable, so a receiver can drop
repeats. A slot :meth:`Store.advance` records (``missed``, or ``uncertain``) makes an event the same
way, in its atomic step (its ``run`` is the history entry, attempt 0); slots that
:meth:`Store.dispatch` records (``skipped``, ``uncertain``) make none. An attempt's start
(:meth:`Store.claim`) makes a ``started`` event, in the claim's atomic step, when the kinds name
``started`` (its ``run`` is then the running run). The outbox holds at most
:attr:`Store.outbox_limit` events: appending beyond it drops the oldest and counts them
(:meth:`Store.outbox_stats`). A delivering process reads :meth:`Store.events_due` and settles each
(:meth:`Store.settle_event`); nothing about delivery ever changes a run or an outcome.

Chains
------
A job with ``after`` (docs/schedules.md) has no slots of its own: the leader names, with
:meth:`Store.set_chains`, which jobs follow which and ``when``. When a run ends for good (the same
run ends as the outbox's: :meth:`Store.finish` accepted, :meth:`Store.reap` lost,
:meth:`Store.end_external`) with an outcome in :data:`CHAIN_OUTCOMES` of a link's ``when``, each
such downstream run is decided *in the same atomic step*, so no process can die between the
upstream's end and the downstream's start: its id is :func:`chained_run_id` (one per upstream run:
the upstream run ends once, so it is decided once), ``slot`` = the upstream run's slot,
``manual`` false, ``epoch`` = the epoch of the lease that set the links, ``queue``, ``digest``
and ``max_attempts`` from the link, ``created_at`` = ``not_before`` = store time; decided after
the ended run left the live set and released its waiting run. As in :meth:`Store.dispatch`: a
paused downstream job → nothing; an active run of it and overlap
``skip`` → a ``skipped`` history entry (:func:`overlap_reason`); ``queue`` → created ``waiting``;
else ``queued``. No watermark, guard or ``last_slot`` is read or written (upstream ends arrive in
any order). A run id already live is not created again.

Atomicity and retries
---------------------
Every method is one atomic step (Redis: one Lua script; SQLite: one ``BEGIN IMMEDIATE``
transaction; PostgreSQL: one transaction, SERIALIZABLE but for claims), except the batch methods,
whose items are each atomic. Every method is safe to repeat after a timeout with the same
arguments: a repeat returns the same answer or a refusal that means "already done"
(``DUPLICATE`` for dispatch, ``FinishStatus.ACCEPTED`` for finish, the same claim for claim).
Connection failures raise :class:`~chronod.errors.StoreUnavailable` (transient); nothing else is
retried.

Durability and rollback
-----------------------
A store may acknowledge a write before it is safe from every failure (Redis replicates
asynchronously). A store that can be configured to wait for replicas (Redis ``replica_acks``)
never lets a dispatched run be claimed, nor a worker run a claim or take a result as recorded,
before the configured replicas acknowledged it; until then the call raises
:class:`NotAcknowledged` (transient: the leader stops dispatching, the worker does not run).

A store that can come back *older* than what a running process saw (a snapshot restored, a
lagging replica promoted, a wipe) detects it when a process presents its newer generation, and
never replays what it lost: slots after a job's watermark up to the detection are recorded with
outcome ``uncertain`` (:attr:`DispatchStatus.UNCERTAIN` from dispatch, ``uncertain`` instead of
``missed`` from advance), runs created before the detection are never started again (they end
``uncertain`` when they would have been claimed or reclaimed), and a leader write that would act
on the leader's now newer-than-stored view raises :class:`RolledBack` so that the leader loads its
state again. Epochs are never handed out twice, even across such a loss. SQLite's file is its own
history: it never raises either; so does PostgreSQL's database (a synchronous standby loses
nothing; see docs/postgres.md for an asynchronous one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from chronod.errors import NotLeader, StoreError, StoreUnavailable
from chronod.store.records import (
    CHAIN_OUTCOMES,
    EVENT_OUTPUT,
    EXTERNAL_TTL,
    MAX_OUTBOX,
    OUTPUT_TAIL,
    UNSUCCESSFUL,
    AttemptResult,
    ChainLink,
    ChannelDelivery,
    Claim,
    DispatchResult,
    DispatchStatus,
    ExternalRun,
    FinishStatus,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    OutboxEvent,
    OutboxStats,
    Outcome,
    Overlap,
    Presence,
    Quarantined,
    Role,
    RunRecord,
    RunState,
    SlotDispatch,
    When,
    WorkerInfo,
    chained_run_id,
    overlap_reason,
    redacted,
    superseded_reason,
    upstream_of,
)

__all__ = [
    "CHAIN_OUTCOMES",
    "EVENT_OUTPUT",
    "EXTERNAL_TTL",
    "MAX_OUTBOX",
    "OUTPUT_TAIL",
    "UNSUCCESSFUL",
    "AttemptResult",
    "ChainLink",
    "ChannelDelivery",
    "Claim",
    "DispatchResult",
    "DispatchStatus",
    "ExternalRun",
    "Fenced",
    "FinishStatus",
    "JobState",
    "JobSync",
    "LeaderInfo",
    "Lease",
    "MissedSlots",
    "NotAcknowledged",
    "OutboxEvent",
    "OutboxStats",
    "Outcome",
    "Overlap",
    "Presence",
    "Quarantined",
    "Role",
    "RolledBack",
    "RunRecord",
    "RunState",
    "SlotDispatch",
    "Store",
    "When",
    "WorkerInfo",
    "chained_run_id",
    "overlap_reason",
    "redacted",
    "superseded_reason",
    "upstream_of",
]


class Fenced(NotLeader):
    """The lease presented is not the current one (wrong token or epoch, or expired)."""


class RolledBack(StoreError):
    """The store went back to an older state than this process had seen (see "Durability and
    rollback" above): the leader's view is ahead of the store; nothing was written."""


class NotAcknowledged(StoreUnavailable):
    """Too few replicas acknowledged a write in time: it exists on the primary only, where a
    failover can lose it, so nothing may rely on it yet (transient)."""


class Store(ABC):
    """Durable state and coordination for chronod. One instance per process (open it after fork)."""

    # The most events the outbox holds ("Outbox" above); an instance attribute may lower it.
    outbox_limit: int = MAX_OUTBOX

    # -- clock -------------------------------------------------------------------------------------

    @abstractmethod
    def now(self) -> datetime:
        """Store time (aware UTC). Redis: ``TIME``. PostgreSQL: ``clock_timestamp()``. SQLite: the
        host clock."""

    # -- leader lease ------------------------------------------------------------------------------

    @abstractmethod
    def acquire_lease(self, node: str, token: str, ttl: timedelta) -> Lease | None:
        """Become leader if nobody holds an unexpired lease.

        On success the epoch counter is incremented and the new lease (``token``, new epoch,
        ``node``, expiry = now + ttl) is stored and returned. If the current holder already has
        this ``token`` (a repeated call), the existing lease is returned unchanged. Otherwise
        returns None.
        """

    @abstractmethod
    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        """Extend ``lease`` to now + ttl if it is still the current, unexpired lease; else None.

        An expired lease is never revived, even if nobody else took over: the holder must acquire
        again (and get a new epoch), so a paused ex-leader can never resume with its old epoch.
        """

    @abstractmethod
    def release_lease(self, lease: Lease) -> None:
        """Give up ``lease`` now (standbys may acquire at once). No-op if it is not current."""

    @abstractmethod
    def leader(self) -> LeaderInfo | None:
        """The current unexpired lease holder, if any."""

    # -- job state (leader writes are fenced) ----------------------------------------------------

    @abstractmethod
    def sync_jobs(
        self, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        """Reconcile stored job state with the loaded config; return the states, in input order.

        Per job, atomically: absent → created with ``fingerprint``, ``watermark = loaded_at``,
        ``next_due``. Fingerprint differs (edited, or retired and re-added) → fingerprint replaced,
        ``watermark = max(watermark, loaded_at)``, ``next_due`` replaced; paused flag and outcome
        fields kept. Same fingerprint → unchanged (the leader then catches up from the watermark).
        Raises :class:`Fenced` (writing nothing) if ``lease`` is not current.
        """

    @abstractmethod
    def retire_jobs(self, lease: Lease, keep: Sequence[str]) -> list[str]:
        """Clear the fingerprint of every job not named in ``keep``; return their names.

        A retired job that is configured again is treated as new (no catch-up for its absence).
        Its history is kept. Raises :class:`Fenced` if ``lease`` is not current.
        """

    @abstractmethod
    def job_states(self) -> dict[str, JobState]:
        """All stored job states by name (including retired ones)."""

    @abstractmethod
    def set_paused(self, job: str, paused: bool) -> JobState:
        """Pause or resume ``job`` (an operator action, not fenced; persists across restarts).

        While paused, dispatch consumes due slots without running them (``PAUSED``). Resuming moves
        the watermark to at least now, so nothing from the paused period runs afterwards. A job
        without state gets one (empty fingerprint) so a pause can precede its first load.
        """

    # -- dispatch (leader) -----------------------------------------------------------------------

    @abstractmethod
    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        """Decide each slot once; one atomic step per item, results in input order.

        Per item, in this order: lease not current → raise :class:`Fenced` (this item and all later
        ones are not applied); no job state or fingerprint differs → ``UNKNOWN_JOB``; slot after
        store time → ``EARLY``; guard exists → ``DUPLICATE``; slot <= watermark → ``STALE``.
        Otherwise the guard is written (expiring after ``guard_ttl``), watermark and ``next_due``
        are set and:

        * paused job → ``PAUSED`` (nothing else recorded);
        * ``superseded_by`` is set → ``SKIPPED``: a history entry with outcome ``skipped`` and
          ``error`` = :func:`superseded_reason` (whatever the active runs);
        * an active run of the job exists and overlap is ``skip`` → ``SKIPPED``: a history entry
          with outcome ``skipped`` and ``error`` = :func:`overlap_reason` naming the job's newest
          active run and its state;
        * an active run exists and overlap is ``queue`` → ``WAITING``: the run is created
          ``waiting``;
        * otherwise → ``QUEUED``: the run is created ``queued`` (``not_before`` = slot) and its
          message appended to ``queue``; ``last_slot`` = slot.

        ``last_slot`` is set for QUEUED and WAITING. The run records ``epoch`` = the lease's epoch.

        A store that detected a rollback (see "Durability and rollback") decides a slot that is
        after the watermark and no later than the detection as ``UNCERTAIN``: the guard is written
        and a history entry with outcome ``uncertain`` recorded; nothing runs. It raises
        :class:`RolledBack` (applying nothing) if the rollback happened since this store object
        last looked, and :class:`NotAcknowledged` if the configured replicas did not acknowledge
        the batch (its runs then stay unclaimable until a later acknowledged dispatch).
        """

    def advance(
        self,
        lease: Lease,
        job: str,
        fingerprint: str,
        missed: Sequence[datetime],
        missed_count: int,
        next_due: datetime | None,
    ) -> JobState:
        """Record slots the leader will not run (late beyond ``grace`` under ``catchup``).

        Atomically: each slot in ``missed`` that is after the watermark gets a history entry with
        outcome ``missed`` (and an outbox event when the job's event kinds name ``missed``); the
        job's missed counter grows by ``missed_count`` (which may exceed ``len(missed)`` when the
        leader summarised a long outage), unless ``missed`` named slots and none of them was after
        the watermark (a repeat counts nothing twice); watermark = max(watermark, newest of
        ``missed``); ``next_due`` replaced. Fenced and fingerprint-checked like dispatch (a
        fingerprint mismatch, or a job without state, changes nothing and returns the stored state,
        ``active`` counting its runs).
        """
        item = MissedSlots(
            job=job,
            fingerprint=fingerprint,
            missed=tuple(missed),
            missed_count=missed_count,
            next_due=next_due,
        )
        return self.advance_many(lease, [item])[0]

    @abstractmethod
    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        """:meth:`advance` for each item, in order: a batch method (each item is one atomic step
        of its own); the states come back in input order.

        Lease not current → raise :class:`Fenced` (that item and all later ones are not applied;
        earlier ones may have been, as if advanced one by one). After an outage every job may have
        missed slots: a store should record them in far fewer round trips (or transactions) than
        one per job.
        """

    # -- manual runs -------------------------------------------------------------------------------

    @abstractmethod
    def enqueue_manual(
        self, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        """Queue a manual run of ``job`` now, through the normal queue; not fenced.

        It consumes no slot (watermark, ``last_slot`` and guards untouched) and has its own run id.
        Overlap: ``allow`` → queued; ``skip`` and ``queue`` → waits behind an active run (an
        operator who asks for a run gets one).
        """

    # -- workers -----------------------------------------------------------------------------------

    @abstractmethod
    def claim(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta, wait: float
    ) -> Claim | None:
        """Start the next attempt of the oldest ready run in ``queues``; None if none in ``wait``.

        Ready: state ``queued`` and ``not_before`` <= now; oldest by ``not_before`` then creation
        (runs created by one call: in the order of its items). The run becomes ``running`` with
        ``attempt + 1``, this ``token``, ``worker`` and an attempt lease expiring at now + ``ttl``.
        Before looking, runs whose attempt lease expired are reclaimed (:meth:`reap`). ``wait``
        bounds how long to block for a run (0: don't block). A malformed run is never returned:
        it is quarantined and the claim looks again ("Malformed records").
        """

    @abstractmethod
    def heartbeat(self, run_id: str, token: str, ttl: timedelta) -> bool:
        """Extend the attempt lease to now + ``ttl``; False if ``token`` is not current (stop)."""

    def drain_quarantined(self) -> list[Quarantined]:
        """The runs this instance quarantined since the last call (then forgotten): the caller
        logs and counts them."""
        return []

    @abstractmethod
    def finish(self, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        """Record the end of an attempt.

        Token not the current attempt's (reclaimed, or never claimed) → ``STALE``, nothing written
        (but a repeat of a finish with the same token and result, within a day, gets the first
        answer again, even after newer entries trimmed its history entry). Outcome FAILED or
        TIMED_OUT with ``retry_at`` and attempts left → a history entry for the attempt, run back to
        ``queued`` with ``not_before = retry_at`` → ``RETRY``. Otherwise the run ends: a history
        entry with the outcome, the job's last outcome fields updated (``last_success_at`` on
        success), the run leaves the live set, the job's oldest ``waiting`` run (if any)
        becomes ``queued``, and its chains start ("Chains") → ``ACCEPTED``.
        """

    # -- runs executed elsewhere (docs/celery.md) -----------------------------------------------

    @abstractmethod
    def begin_external(self, run: ExternalRun) -> bool:
        """Claim the one execution of ``(run.run_id, run.try_no)`` by a system outside chronod.

        No record for the pair → one is written (``run``'s fields, ``executor``, ``started_at`` =
        store time), kept at least :data:`EXTERNAL_TTL` → True: execute. A record of the same
        ``executor`` → True again, nothing written (a client retry). A record of another executor
        (a redelivered or republished message, whether or not the first execution ended) → False:
        do not execute. Neither the run nor the job need exist in the store; nothing is fenced.
        """

    @abstractmethod
    def end_external(self, run: ExternalRun, result: AttemptResult) -> bool:
        """Record how the execution begun by :meth:`begin_external` ended.

        Only the record's own ``executor``, and only once: a history entry for ``run.job`` with
        ``run``'s identity (``manual`` false, ``digest`` empty, ``max_attempts`` = ``attempt``,
        ``worker`` = ``executor``, ``created_at`` and ``started_at`` = the begin's store time),
        ``finished_at`` = store time and ``result``'s outcome, exit code, output tail and error;
        the job's last outcome fields as in :meth:`finish` (an unknown job gets a state with an
        empty fingerprint, as :meth:`set_paused` creates), and the chains the outcome starts
        ("Chains") → True. A repeat by the same executor
        → True, nothing written. No record, or another executor's → False, nothing written.
        ``result.retry_at`` is ignored: the other system retries by itself (a new ``try_no``).
        """

    @abstractmethod
    def hand_back(self, run_id: str, token: str) -> bool:
        """Return a claimed run to its queue without spending an attempt (graceful shutdown).

        Only with the current token; the attempt counter goes back by one. False if stale.
        """

    @abstractmethod
    def reap(self) -> list[str]:
        """Reclaim runs whose attempt lease expired (their worker died or stalled).

        Each becomes ``queued`` again (ready now) if attempts are left, else ends ``lost`` (history,
        last outcome, waiting successor released, chains started as in :meth:`finish`). Its token
        is cleared, so the old worker's heartbeat and finish are refused. Returns the run ids.
        """

    @abstractmethod
    def register_worker(self, info: WorkerInfo) -> None:
        """Record that a worker process is alive (called every few seconds); entries expire."""

    @abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """Workers seen recently (within a minute), newest first."""

    # -- presence ----------------------------------------------------------------------------------

    @abstractmethod
    def announce(self, member: str, role: Role, *, stopped: bool = False) -> None:
        """Record that process ``member`` (``host:pid``) is alive in ``role``, or with
        ``stopped`` that it has stopped cleanly; ``seen_at`` is store time.

        Schedulers (``chronod run``) announce themselves every few seconds whether they lead or
        not, so that standbys can be seen; workers, which :meth:`register_worker` while alive,
        announce only their clean stop. Each announcement replaces the member's previous one
        (a stopped member that announces itself alive again is alive). Entries not announced for
        a minute (the window of :meth:`workers`) are forgotten. Not fenced; repeating it only
        moves ``seen_at``.
        """

    @abstractmethod
    def presences(self) -> list[Presence]:
        """Members announced within the last minute, newest first."""

    # -- outbox ("Outbox" above) -------------------------------------------------------------------

    @abstractmethod
    def set_event_kinds(self, lease: Lease, kinds: Mapping[str, frozenset[str]]) -> None:
        """Replace every job's event kinds: outcome values, ``recovered`` and ``started``, per
        job (a job not named has none, and its runs make no event). Events already in the outbox
        stay.
        Raises :class:`Fenced` (writing nothing) if ``lease`` is not current; a repeat changes
        nothing.
        """

    @abstractmethod
    def set_chains(self, lease: Lease, links: Sequence[ChainLink]) -> None:
        """Replace every chain link ("Chains" above): a job not named as ``upstream`` starts
        nothing. The links remember ``lease``'s epoch (the epoch of the runs they create). Raises
        :class:`Fenced` (writing nothing) if ``lease`` is not current; a repeat changes nothing.
        """

    @abstractmethod
    def events_due(self, limit: int) -> list[OutboxEvent]:
        """At most ``limit`` outbox events whose next delivery is due (at or before now): the
        earliest due first, then in the order they were appended (an event is due when it is
        appended). Reading changes nothing."""

    @abstractmethod
    def settle_event(
        self, event_id: str, attempts: int, done: Sequence[str], retry_at: datetime | None
    ) -> bool:
        """After a delivery attempt: with ``retry_at`` None the event leaves the outbox
        (delivered everywhere, or given up); otherwise its ``attempts`` and ``done`` are replaced
        and it is due again at ``retry_at``. False if the event is not in the outbox (settled
        before, or dropped). The values are absolute, so a repeat changes nothing more."""

    @abstractmethod
    def outbox_stats(self) -> OutboxStats:
        """How many events wait, and how many were dropped because the outbox was full."""

    @abstractmethod
    def note_delivery(self, channel: str, error: str | None) -> None:
        """Record a delivery attempt over ``channel`` at store time: with ``error`` None it
        succeeded (``last_ok_at`` = now), else ``last_error`` = ``error`` (at most 500
        characters kept) and ``last_error_at`` = now; the other fields are kept. Not fenced; a
        repeat only moves the instant."""

    @abstractmethod
    def deliveries(self) -> list[ChannelDelivery]:
        """The last delivery of every channel :meth:`note_delivery` heard of, by name."""

    # -- reading -----------------------------------------------------------------------------------

    @abstractmethod
    def run(self, run_id: str) -> RunRecord | None:
        """The live run, or else its newest history entry, or None."""

    @abstractmethod
    def live_runs(self, job: str | None = None) -> list[RunRecord]:
        """Queued, waiting and running runs (of ``job``), oldest first."""

    @abstractmethod
    def history(self, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` history entries of ``job``, newest first."""

    @abstractmethod
    def queue_depths(self) -> dict[str, int]:
        """Runs in state ``queued`` per queue name (including those not yet ready)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""

    def describe(self) -> str:
        """Where the store is, without credentials (safe to log)."""
        return type(self).__name__

    def verify(self) -> None:
        """Check, more thoroughly than opening does, that the store holds readable chronod
        state; raise :class:`~chronod.errors.StoreCorrupt` if not. Daemons call it once at start
        (it may read everything). Opening already refuses an empty or foreign store."""
        return  # a store with nothing more to check than opening does

    def storage_problems(self) -> list[str]:
        """Conditions of the store's storage that make writes fail or about to (one line each,
        for ``chronod status``): a nearly full disk, a read-only mount. Cheap; never raises."""
        return []

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
