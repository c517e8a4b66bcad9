"""The scheduler: decide which slots are due and hand each to the store's fenced dispatch, once.

The rules it applies (edits, grace, catch-up, overlap) are docs/design.md §3; the store's side of
the dispatch (fence, guard, watermark) is §5.

Only the leader runs :meth:`Scheduler.tick`. Due jobs sit in a :class:`DueHeap` keyed by their
next slot, so a tick costs O(due · log n), not O(jobs); between ticks the daemon sleeps until the
heap's head is due.

Per due job the slots in (watermark, now] are split by ``grace``: slots late by at most ``grace``
are dispatched, oldest first; older ones follow ``catchup`` (``none``: recorded missed;
``latest``: the newest runs; ``all``: the newest ``catchup_limit`` run) and the rest are recorded
missed (:func:`chronod.plan.plan_slots`, a pure function). The store re-checks everything (fence,
not early by store time, guard, watermark), so a stale view here can only cause a refusal, never a
second run.

Slots that come due together with ``overlap = "skip"``
    Normally a tick finds one slot per job. After an outage (or a failover, a paused host) a job
    may have several slots to run at once. With ``overlap = "skip"`` the job must never run twice
    at the same time, so only one of them can run; it is the **newest** (the run closest to now,
    as ``catchup = "latest"`` does for older slots), and each older one is recorded ``skipped``
    with the reason "superseded by NAME@…" (``SlotDispatch.superseded_by``). Dispatching them
    oldest first instead would queue the oldest and skip the newer ones only because that first
    run was still queued — a run nobody was waiting for in place of the current one.
    ``overlap = "queue"`` and ``"allow"`` run every slot, oldest first.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chronod.alerts.model import event_kinds
from chronod.config import JobConfig
from chronod.config.chains import chain_links
from chronod.instants import format_utc, slot_id
from chronod.logs import event
from chronod.plan import COUNT_CAP, MISSED_ENTRIES, Plan, Plans, guard_ttl, plan_slots
from chronod.schedules import Schedule
from chronod.store.base import (
    DispatchResult,
    DispatchStatus,
    JobState,
    JobSync,
    Lease,
    MissedSlots,
    SlotDispatch,
    Store,
    superseded_reason,
)

# Re-exported: planning lived here before it had a module of its own (chronod.plan).
__all__ = [
    "COUNT_CAP",
    "MISSED_ENTRIES",
    "DueHeap",
    "Plan",
    "Scheduler",
    "TickReport",
    "guard_ttl",
    "plan_slots",
]

log = logging.getLogger("chronod.scheduler")

# After an EARLY refusal (our estimate of store time ran ahead), try again this soon.
EARLY_RETRY = timedelta(milliseconds=20)
# Slots per store.dispatch call. A call is one transaction on SQLite: unbounded, a large catch-up
# held the write lock past the lease's expiry, so the leader could not renew and lost the lease.
DISPATCH_BATCH = 2000
# Jobs per store.advance_many call (missed slots, after an outage): on SQLite one transaction,
# each job up to MISSED_ENTRIES history rows.
ADVANCE_BATCH = 500
# Jobs due at one instant from which the daemon plans them ahead of time, in parts
# (chronod.daemon): fewer are planned at the tick itself or just before it, which costs a few
# milliseconds at most.
CROWD = 100
# A tick that decides at most this many slots (or records missed slots of at most this many jobs)
# logs one line per slot (job); a larger one logs one summary line and the per-slot lines at DEBUG.
# Formatting and writing a line costs 50-80 µs: one per slot would make a tick of 100,000 slots
# spend seconds writing logs (and flood the journal with what metrics already count).
LOG_EACH = 20
# Decisions that get a log line of their own (the others change nothing worth a line).
_LOGGED = frozenset(
    {
        DispatchStatus.QUEUED,
        DispatchStatus.WAITING,
        DispatchStatus.SKIPPED,
        DispatchStatus.UNCERTAIN,
    }
)


@dataclass(frozen=True)
class _Prepared:
    """A plan made ahead of the due instant (:meth:`Scheduler.prepare`), with its dispatch items."""

    at: datetime  # the store instant it was planned for
    watermark: datetime | None  # the job's watermark it was planned from
    plan: Plan
    items: list[SlotDispatch]
    # The oldest slot to run (None: nothing to run): run slots are oldest first, so it is the
    # first to fall out of grace, and checking a plan at the tick is a few comparisons.
    oldest_run: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.plan.run:
            object.__setattr__(self, "oldest_run", self.plan.run[0])

    def valid_at(self, job: JobConfig, watermark: datetime | None, now: datetime) -> bool:
        """Whether ``plan_slots(job, watermark, now)`` is exactly this plan.

        True when planned from the same watermark at or before ``now``, nothing was missed, no slot
        falls in (at, now] and every slot to run is still within grace at ``now``: then both plans
        run every fire in (watermark, now] and name the same next fire. (Every slot to run is at
        or before ``at``, hence before ``now``; the oldest is the first to fall out of grace.)
        """
        plan = self.plan
        return (
            self.watermark == watermark
            and self.at <= now
            and plan.missed_count == 0
            and (plan.next_due is None or plan.next_due > now)
            and (self.oldest_run is None or now - job.grace <= self.oldest_run)
        )


class _Sender:
    """The store calls of one tick: slots to dispatch and missed slots to record, in batches.

    Missed slots go first (:meth:`Store.advance_many`, ADVANCE_BATCH jobs per call): recording a
    job's missed slots moves its watermark to the newest of them, so they must be recorded before
    any later slot of the same job is dispatched, or the store would find them behind the
    watermark and record nothing. ``between()`` runs between two store calls.
    """

    def __init__(self, store: Store, lease: Lease, between: Callable[[], object]) -> None:
        self.store, self.lease, self.between = store, lease, between
        self.batch: list[SlotDispatch] = []
        self.results: list[DispatchResult] = []
        self.missed: list[tuple[JobConfig, Plan]] = []
        self.recorded: list[JobState] = []  # the states advance_many returned, in order
        self.calls = 0

    def _call(self) -> None:
        if self.calls:
            self.between()
        self.calls += 1

    def record_missed(self, at_least: int = 1) -> None:
        """Record pending missed slots, in ADVANCE_BATCH calls, while ``at_least`` are pending."""
        while len(self.missed) - len(self.recorded) >= at_least:
            start = len(self.recorded)
            chunk = [
                MissedSlots(
                    job=job.name,
                    fingerprint=job.fingerprint,
                    missed=plan.missed,
                    missed_count=plan.missed_count,
                    next_due=plan.next_due,
                )
                for job, plan in self.missed[start : start + ADVANCE_BATCH]
            ]
            self._call()
            self.recorded.extend(self.store.advance_many(self.lease, chunk))

    def send_full(self) -> None:
        """Send a batch if a full one is waiting (missed slots first if any are, or if many)."""
        self.record_missed(ADVANCE_BATCH)
        if len(self.batch) - len(self.results) >= DISPATCH_BATCH:
            self._send()

    def send_all(self) -> None:
        self.record_missed()
        while len(self.results) < len(self.batch):
            self._send()

    def _send(self) -> None:
        self.record_missed()
        self._call()
        done = len(self.results)
        self.results.extend(
            self.store.dispatch(self.lease, self.batch[done : done + DISPATCH_BATCH])
        )


class DueHeap:
    """Jobs by the store instant they are next due: a heap with lazy deletion.

    A job has at most one live entry: the one it was last pushed with (the very tuple: an older
    entry at the same instant is another object, so it cannot come back to life). Rescheduling
    leaves the old entry in the heap, recognised as superseded and dropped when it reaches the
    top; so rescheduling costs O(log n) and nothing is ever searched.
    """

    def __init__(self, crowd: int = CROWD) -> None:
        self._heap: list[tuple[datetime, str]] = []  # ties by name, as the entries compare
        self._live: dict[str, tuple[datetime, str]] = {}  # job -> its live entry
        # Live entries per instant, and the instants with at least ``crowd`` of them: what the
        # daemon plans ahead of time (a walk of the heap would cost O(due) at every step).
        self._crowd = crowd
        self._count: dict[datetime, int] = {}
        self._crowded: set[datetime] = set()

    def __len__(self) -> int:
        """How many jobs will be due (superseded entries do not count)."""
        return len(self._live)

    def clear(self) -> None:
        self._heap = []
        self._live = {}
        self._count = {}
        self._crowded = set()

    def count_at(self, at: datetime) -> int:
        """How many jobs are due at exactly ``at``."""
        return self._count.get(at, 0)

    def crowded(self, after: datetime | None, until: datetime) -> datetime | None:
        """The earliest instant in (after, until] at which at least ``crowd`` jobs are due."""
        found = [at for at in self._crowded if at <= until and (after is None or at > after)]
        return min(found, default=None)

    def _counted(self, at: datetime, step: int) -> None:
        count = self._count.get(at, 0) + step
        if count:
            self._count[at] = count
        else:
            del self._count[at]
        if count >= self._crowd:
            self._crowded.add(at)
        else:
            self._crowded.discard(at)

    def due_at(self, name: str) -> datetime | None:
        live = self._live.get(name)
        return live[0] if live is not None else None

    def push(self, name: str, at: datetime | None) -> None:
        """Job ``name`` is next due at ``at`` (None: never again)."""
        old = self._live.pop(name, None)
        if old is not None:
            self._counted(old[0], -1)
        if at is None:
            return
        entry = (at, name)
        self._live[name] = entry
        self._counted(at, 1)
        heapq.heappush(self._heap, entry)

    def head(self) -> datetime | None:
        """The instant the next job is due (None: none will ever be)."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][1]) is not heap[0]:
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    def pop_due(self, now: datetime) -> Iterator[tuple[str, datetime]]:
        """Take out the jobs due at or before ``now``, earliest first, one at a time: the caller's
        work on one job happens before the next is popped (a failing caller leaves the rest)."""
        heap, live, heappop = self._heap, self._live, heapq.heappop  # locals: 100,000 jobs a tick
        while heap:
            entry = heap[0]
            at, name = entry
            if live.get(name) is not entry:
                heappop(heap)  # superseded entry
                continue
            if at > now:
                return
            heappop(heap)
            del live[name]
            self._counted(at, -1)
            yield name, at

    def due_by(self, at: datetime) -> Iterator[tuple[str, datetime]]:
        """The jobs due at or before ``at``, in no particular order, without taking them out: a
        walk of the heap's tree that prunes every subtree whose root is due after ``at``."""
        heap, live, stack = self._heap, self._live, [0]
        while stack:
            i = stack.pop()
            if i >= len(heap) or heap[i][0] > at:
                continue
            entry = heap[i]
            if live.get(entry[1]) is entry:
                yield entry[1], entry[0]
            stack.extend((2 * i + 1, 2 * i + 2))


@dataclass
class TickReport:
    """What one tick did (for logs, metrics and tests)."""

    dispatched: list[tuple[SlotDispatch, DispatchResult]] = field(default_factory=list)
    missed: dict[str, int] = field(default_factory=dict)


class Scheduler:
    """Leader-side state: the jobs, their local watermarks and the due heap."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs: Mapping[str, JobConfig] = {}
        self._watermark: dict[str, datetime | None] = {}
        self._due = DueHeap()
        # job -> (fingerprint, digest): JobConfig computes both (JSON + SHA-256) on every access,
        # which cost more than everything else in a tick of many jobs.
        self._identity: dict[str, tuple[str, str]] = {}
        self._prepared: dict[str, _Prepared] = {}
        self.prepared_until: datetime | None = None  # the newest instant prepare() planned for

    # -- loading ----------------------------------------------------------------------------------

    def load(self, lease: Lease, jobs: Mapping[str, JobConfig]) -> list[JobState]:
        """Load the jobs as leader: sync fingerprints (edits never fire early), rebuild the heap."""
        self.clear()
        identity = {name: (j.fingerprint, j.digest) for name, j in jobs.items()}
        loaded_at = self.store.now()
        # Jobs with the same definition share one schedule object (chronod.config), and a
        # schedule is a pure function: its next slot after an instant is computed once here, not
        # once per job (100,000 jobs may share a handful of schedules, and their watermarks).
        firsts: dict[tuple[int, datetime], datetime | None] = {}

        def first_after(schedule: Schedule, instant: datetime) -> datetime | None:
            key = (id(schedule), instant)  # the schedules outlive this call: ids are stable
            if key not in firsts:
                firsts[key] = schedule.next_after(instant)
            return firsts[key]

        syncs = [
            JobSync(
                name=name,
                fingerprint=identity[name][0],
                next_due=first_after(j.schedule, loaded_at),
            )
            for name, j in jobs.items()
        ]
        states = self.store.sync_jobs(lease, syncs, loaded_at)
        retired = self.store.retire_jobs(lease, list(jobs))
        self.store.set_event_kinds(lease, event_kinds(jobs))  # the outbox (chronod.alerts)
        self.store.set_chains(lease, chain_links(jobs))  # runs the store starts after others
        for name in retired:
            log.info("job %s is no longer configured: retired", name)
        self.jobs = jobs
        self._identity = identity
        self._watermark = {s.name: s.watermark for s in states}
        for state in states:
            # The first slot the job may still run: after its watermark (catch-up), else after
            # the load instant.
            after = state.watermark if state.watermark is not None else loaded_at
            self._due.push(state.name, first_after(jobs[state.name].schedule, after))
        return states

    def clear(self) -> None:
        """Forget everything (on losing leadership); :meth:`load` rebuilds from the store."""
        self.jobs = {}
        self._watermark = {}
        self._due.clear()
        self._identity = {}
        self._prepared = {}
        self.prepared_until = None

    # -- the tick ---------------------------------------------------------------------------------

    def next_wake(self) -> datetime | None:
        """Store instant at which the next job is due (None: nothing will ever be due)."""
        return self._due.head()

    def prepare(self, at: datetime, limit: int | None = None) -> int:
        """Plan now, ahead of time, the jobs due at or before store instant ``at``, each as of
        the instant it is due; at most ``limit`` of them (None: all). Returns how many it planned.

        The daemon calls this shortly before those instants, so that the tick at each of them only
        checks and sends (planning many jobs takes milliseconds per thousand); ``limit`` lets it
        plan a crowded instant in parts between the ticks due meanwhile. A prepared plan is used
        only if it is exactly what planning at the tick's ``now`` would give
        (:meth:`_Prepared.valid_at`); otherwise the job is planned again. Only once every job due
        by ``at`` is planned does :attr:`prepared_until` reach ``at``.
        """
        count = 0
        plans = Plans()
        for name, due in self._due.due_by(at):
            if name not in self._prepared:
                if count == limit:
                    return count
                job = self.jobs[name]
                watermark = self._watermark.get(name)
                plan = plans.plan(job, watermark, due)
                self._prepared[name] = _Prepared(due, watermark, plan, self._items(job, plan))
                count += 1
        if self.prepared_until is None or at > self.prepared_until:
            self.prepared_until = at
        return count

    def due_at(self, at: datetime) -> int:
        """How many jobs are due at exactly store instant ``at``."""
        return self._due.count_at(at)

    def crowded(self, until: datetime) -> datetime | None:
        """The earliest instant after :attr:`prepared_until` and at or before ``until`` at which
        at least CROWD jobs are due (None: none)."""
        return self._due.crowded(self.prepared_until, until)

    def tick(
        self, lease: Lease, now: datetime, between: Callable[[], object] = lambda: None
    ) -> TickReport:
        """Dispatch what is due at store time ``now``; raises Fenced if the lease is not current.

        The slots go to the store DISPATCH_BATCH at a time, with ``between()`` called between
        two calls (the daemon renews its lease there if a renewal is due). If a store call fails
        (raises), every job that was due goes back into the heap at the instant it was due, so
        the daemon's next attempt retries it from its watermark at once rather than at its next
        slot (or never); slots a failed tick did dispatch are then refused as duplicates.
        """
        report = TickReport()
        out = _Sender(self.store, lease, between)
        due: list[tuple[str, datetime]] = []
        next_dues: list[tuple[str, datetime | None]] = []
        # Locals: this loop runs once per due job, 100,000 times in a large tick.
        prepared, jobs, watermarks, plans = self._prepared, self.jobs, self._watermark, Plans()
        try:
            # A full batch goes out as soon as it is planned: the first slots of a large tick do
            # not wait for the planning of the last ones.
            for name, at in self._due.pop_due(now):
                due.append((name, at))
                job = jobs[name]
                watermark = watermarks.get(name)
                ahead = prepared.pop(name, None)
                if ahead is not None and ahead.valid_at(job, watermark, now):
                    plan, items = ahead.plan, ahead.items
                else:
                    plan = plans.plan(job, watermark, now)
                    items = self._items(job, plan)
                if plan.missed_count:
                    out.missed.append((job, plan))
                    report.missed[name] = plan.missed_count
                out.batch.extend(items)
                next_dues.append((name, plan.next_due))
                out.send_full()
            out.send_all()
        except BaseException:
            for name, at in due:
                self._due.push(name, at)
            raise
        finally:
            self._log_missed(out.missed[: len(out.recorded)])
        for (job, _), state in zip(out.missed, out.recorded, strict=True):
            self._watermark[job.name] = state.watermark
        # Pushed only now: the store calls are what the due slots were waiting for.
        for name, next_due in next_dues:
            self._due.push(name, next_due)
        self._settle_all(lease, report, out.batch, out.results)
        return report

    # -- internals --------------------------------------------------------------------------------

    def _items(self, job: JobConfig, plan: Plan) -> list[SlotDispatch]:
        fingerprint, digest = self._identity[job.name]
        items = []
        # overlap=skip runs one slot of those due together: the newest (module docstring).
        superseded_by = None
        if job.overlap == "skip" and len(plan.run) > 1:
            superseded_by = slot_id(job.name, plan.run[-1])
        for i, slot in enumerate(plan.run):
            last = i + 1 == len(plan.run)
            next_due = plan.next_due if last else plan.run[i + 1]
            items.append(
                SlotDispatch(
                    job=job.name,
                    fingerprint=fingerprint,
                    slot=slot,
                    next_due=next_due,
                    queue=job.queue,
                    digest=digest,
                    overlap=job.overlap,
                    max_attempts=job.max_attempts,
                    guard_ttl=guard_ttl(job, slot, next_due),
                    superseded_by=None if last else superseded_by,
                )
            )
        return items

    def _settle_all(
        self,
        lease: Lease,
        report: TickReport,
        batch: Sequence[SlotDispatch],
        results: Sequence[DispatchResult],
    ) -> None:
        unknown: set[str] = set()
        dispatched = report.dispatched
        for item, result in zip(batch, results, strict=True):
            if result.status is DispatchStatus.UNKNOWN_JOB:
                unknown.add(item.job)
            else:
                self._settle(item, result)
            dispatched.append((item, result))
        self._log_dispatched(lease.epoch, dispatched)
        if unknown:
            self._resync(lease, sorted(unknown))

    def _settle(self, item: SlotDispatch, result: DispatchResult) -> None:
        name = item.job
        if result.status is DispatchStatus.EARLY:
            # The store's clock is behind the instant we judged by (e.g. a host clock stepped back):
            # come back for this slot shortly.
            retry = item.slot + EARLY_RETRY
            scheduled = self._due.due_at(name)
            self._due.push(name, retry if scheduled is None else min(retry, scheduled))
            return
        current = self._watermark.get(name)
        if current is None or item.slot > current:
            self._watermark[name] = item.slot

    # -- logging ----------------------------------------------------------------------------------

    def _log_dispatched(
        self, epoch: int, dispatched: Sequence[tuple[SlotDispatch, DispatchResult]]
    ) -> None:
        """One INFO line per dispatched or skipped slot, or for a large tick one summary line
        (counts by status, largest lateness) with the per-slot lines at DEBUG."""
        logged = [pair for pair in dispatched if pair[1].status in _LOGGED]
        if len(logged) <= LOG_EACH:
            for item, result in logged:
                _log_slot(logging.INFO, epoch, item, result)
            return
        counts = Counter(result.status.value.replace("-", "_") for _, result in dispatched)
        late = max(
            (result.dispatched_at - item.slot for item, result in logged if result.dispatched_at),
            default=timedelta(),
        )
        ran = counts["queued"] + counts["waiting"]
        event(
            log,
            logging.INFO,
            f"dispatched {ran} slot(s) of {len(dispatched)} decided in one tick",
            epoch=epoch,
            lateness_max_ms=round(late.total_seconds() * 1000, 1),
            **dict(sorted(counts.items())),
        )
        if log.isEnabledFor(logging.DEBUG):
            for item, result in logged:
                _log_slot(logging.DEBUG, epoch, item, result)

    def _log_missed(self, missed: Sequence[tuple[JobConfig, Plan]]) -> None:
        """One WARNING line per job with missed slots, or past LOG_EACH jobs one summary line
        with the per-job lines at DEBUG."""
        if not missed:
            return
        if len(missed) <= LOG_EACH:
            for job, plan in missed:
                _log_missed_job(logging.WARNING, job, plan)
            return
        slots = sum(plan.missed_count for _, plan in missed)
        event(
            log,
            logging.WARNING,
            f"{slots} slot(s) of {len(missed)} jobs missed (each job's catchup applied)",
            jobs=len(missed),
            slots=slots,
        )
        if log.isEnabledFor(logging.DEBUG):
            for job, plan in missed:
                _log_missed_job(logging.DEBUG, job, plan)

    def _resync(self, lease: Lease, names: list[str]) -> None:
        """The store holds another fingerprint for these jobs (a leader with another config wrote
        it): make ours current. Like any edit, this never fires early."""
        log.warning("jobs %s: the store holds another definition; re-syncing", ", ".join(names))
        loaded_at = self.store.now()
        syncs = [
            JobSync(
                name=n,
                fingerprint=self._identity[n][0],
                next_due=self.jobs[n].schedule.next_after(loaded_at),
            )
            for n in names
        ]
        for state in self.store.sync_jobs(lease, syncs, loaded_at):
            self._watermark[state.name] = state.watermark
            self._due.push(state.name, self._first_after(state.name, state.watermark, loaded_at))

    def _first_after(self, name: str, watermark: datetime | None, now: datetime) -> datetime | None:
        """First slot the job may still run: after its watermark (catch-up), else after now."""
        job = self.jobs[name]
        return job.schedule.next_after(watermark if watermark is not None else now)

    def due_count(self) -> int:
        return len(self._due)


def _log_slot(level: int, epoch: int, item: SlotDispatch, result: DispatchResult) -> None:
    slot = format_utc(item.slot)
    if result.status is DispatchStatus.SKIPPED and item.superseded_by is not None:
        message = f"skipped {result.run_id}: {superseded_reason(item.superseded_by)}"
    elif result.status is DispatchStatus.SKIPPED:
        message = f"skipped {result.run_id}: previous run still active (overlap = skip)"
    elif result.status is DispatchStatus.UNCERTAIN:
        message = (
            f"slot {result.run_id or slot} recorded uncertain: the store went back and lost the "
            "window it falls in (it may have run then); not run again"
        )
        level = max(level, logging.WARNING)
    else:
        message = f"dispatched {result.run_id} ({result.status.value})"
    event(log, level, message, job=item.job, run_id=result.run_id, slot=slot, epoch=epoch)


def _log_missed_job(level: int, job: JobConfig, plan: Plan) -> None:
    newest = plan.missed[-1] if plan.missed else None
    event(
        log,
        level,
        f"job {job.name}: {plan.missed_count} slot(s) missed (catchup={job.catchup})"
        + (f", newest {format_utc(newest)}" if newest else ""),
        job=job.name,
    )
