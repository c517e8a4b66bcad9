"""The scheduler: decide which slots are due and hand each to the store's fenced dispatch, once.

Only the leader runs :meth:`Scheduler.tick`. Due jobs sit in a heap keyed by their next slot, so a
tick costs O(due · log n), not O(jobs); between ticks the daemon sleeps until the heap's head is
due.

Per due job the slots in (watermark, now] are split by ``grace`` (DESIGN §3): slots late by at most
``grace`` are dispatched, oldest first; older ones follow ``catchup`` (``none``: recorded missed;
``latest``: the newest runs; ``all``: the newest ``catchup_limit`` run) and the rest are recorded
missed. The store re-checks everything (fence, not early by store time, guard, watermark), so a
stale view here can only cause a refusal, never a second run.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from chronod.config import JobConfig
from chronod.instants import format_utc
from chronod.schedules import Schedule
from chronod.store.base import (
    DispatchResult,
    DispatchStatus,
    JobState,
    JobSync,
    Lease,
    SlotDispatch,
    Store,
)

log = logging.getLogger("chronod.scheduler")

TICK = timedelta(microseconds=1)
GUARD_MIN = timedelta(hours=24)
# Missed slots get history entries for at most this many of the newest ones per decision; the
# counter still counts them all (up to COUNT_CAP, past which a long outage is summarised).
MISSED_ENTRIES = 20
COUNT_CAP = 100_000
# After an EARLY refusal (our estimate of store time ran ahead), try again this soon.
EARLY_RETRY = timedelta(milliseconds=20)
# Slots per store.dispatch call. A call is one transaction on SQLite: unbounded, a large catch-up
# held the write lock past the lease's expiry, so the leader could not renew and lost the lease.
DISPATCH_BATCH = 2000


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to do with one job's due slots."""

    run: tuple[datetime, ...]  # to dispatch, oldest first
    missed: tuple[datetime, ...]  # newest missed slots that get history entries
    missed_count: int  # all missed slots (>= len(missed); capped at COUNT_CAP)
    next_due: datetime | None  # first slot after ``now``


def plan_slots(job: JobConfig, watermark: datetime | None, now: datetime) -> Plan:
    """Split the slots of ``job`` in (watermark, now] by grace and catchup. Pure."""
    schedule = job.schedule
    floor = watermark if watermark is not None else now
    cutoff = now - job.grace  # a slot at exactly ``cutoff`` is late by ``grace``: still runs
    start = max(floor, cutoff - TICK)
    in_grace: list[datetime] = []
    next_due: datetime | None = None
    # One walk gives the slots in (start, now] and the first one after ``now``: the schedule is
    # the costly part of planning, so it is not asked for that first slot a second time.
    for fire in schedule.fires(start):
        if fire.at > now:
            next_due = fire.at
            break
        in_grace.append(fire.at)
    if start > now:  # a watermark ahead of ``now`` (the store's clock went back)
        next_due = schedule.next_after(now)
    keep = {"none": 0, "latest": 1, "all": job.catchup_limit}[job.catchup]
    older, count = _newest_before(schedule, floor, cutoff, keep + MISSED_ENTRIES)
    split = max(len(older) - keep, 0)
    catch_up, missed = older[split:], older[:split]
    return Plan(
        run=(*catch_up, *in_grace),
        missed=tuple(missed[-MISSED_ENTRIES:]),
        missed_count=count - len(catch_up),
        next_due=next_due,
    )


def _fires_between(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fires in (after, until]."""
    for fire in schedule.fires(after):
        if fire.at > until:
            return
        yield fire.at


def _newest_before(
    schedule: Schedule, floor: datetime, cutoff: datetime, need: int
) -> tuple[list[datetime], int]:
    """The newest ``need`` fires in (floor, cutoff) and how many there are in all (capped).

    Schedules only walk forward, so look back from ``cutoff`` through a window that grows 4x until
    it holds ``need`` fires or reaches ``floor``; then count what lies before the window.
    """
    if cutoff <= floor + TICK:
        return [], 0
    span = timedelta(minutes=1)
    while True:
        low = max(floor, cutoff - span)
        found = list(_fires_between(schedule, low, cutoff - TICK))
        if len(found) >= need or low == floor:
            break
        span *= 4
    count = len(found)
    if low > floor:
        count += sum(1 for _ in islice(_fires_between(schedule, floor, low), COUNT_CAP))
    return found[-need:] if need else [], min(count, COUNT_CAP)


def guard_ttl(job: JobConfig, slot: datetime, next_due: datetime | None) -> timedelta:
    """How long the slot's guard must live: max(24 h, 2 periods) (DESIGN §5)."""
    period = (next_due - slot) if next_due is not None else timedelta()
    return max(GUARD_MIN, 2 * period)


@dataclass(frozen=True)
class _Prepared:
    """A plan made ahead of the due instant (:meth:`Scheduler.prepare`), with its dispatch items."""

    at: datetime  # the store instant it was planned for
    watermark: datetime | None  # the job's watermark it was planned from
    plan: Plan
    items: list[SlotDispatch]

    def valid_at(self, job: JobConfig, watermark: datetime | None, now: datetime) -> bool:
        """Whether ``plan_slots(job, watermark, now)`` is exactly this plan.

        True when planned from the same watermark at or before ``now``, nothing was missed, no slot
        falls in (at, now] and every slot to run is still within grace at ``now``: then both plans
        run every fire in (watermark, now] and name the same next fire.
        """
        plan = self.plan
        return (
            self.watermark == watermark
            and self.at <= now
            and plan.missed_count == 0
            and (plan.next_due is None or plan.next_due > now)
            and all(now - job.grace <= slot <= now for slot in plan.run)
        )


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
        self._heap: list[tuple[datetime, str]] = []
        self._scheduled: dict[str, datetime] = {}  # job -> the heap entry that is live for it
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
        syncs = [
            JobSync(
                name=name, fingerprint=identity[name][0], next_due=j.schedule.next_after(loaded_at)
            )
            for name, j in jobs.items()
        ]
        states = self.store.sync_jobs(lease, syncs, loaded_at)
        retired = self.store.retire_jobs(lease, list(jobs))
        for name in retired:
            log.info("job %s is no longer configured: retired", name)
        self.jobs = jobs
        self._identity = identity
        self._watermark = {s.name: s.watermark for s in states}
        for state in states:
            self._push(state.name, self._first_after(state.name, state.watermark, loaded_at))
        return states

    def clear(self) -> None:
        """Forget everything (on losing leadership); :meth:`load` rebuilds from the store."""
        self.jobs = {}
        self._watermark = {}
        self._heap = []
        self._scheduled = {}
        self._identity = {}
        self._prepared = {}
        self.prepared_until = None

    # -- the tick ---------------------------------------------------------------------------------

    def next_wake(self) -> datetime | None:
        """Store instant at which the next job is due (None: nothing will ever be due)."""
        heap = self._heap
        while heap and self._scheduled.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # superseded entry
        return heap[0][0] if heap else None

    def prepare(self, at: datetime) -> int:
        """Plan now, ahead of time, every job due at or before store instant ``at``.

        The daemon calls this just before the next due instant, so that the tick at that instant
        only checks and sends (planning many jobs takes milliseconds per thousand). A prepared plan
        is used only if it is exactly what planning at the tick's ``now`` would give
        (:meth:`_Prepared.valid_at`); otherwise the job is planned again. Returns how many jobs
        were planned.
        """
        count = 0
        for name, _ in self._due_by(at):
            if name not in self._prepared:
                job = self.jobs[name]
                watermark = self._watermark.get(name)
                plan = plan_slots(job, watermark, at)
                self._prepared[name] = _Prepared(at, watermark, plan, self._items(job, plan))
                count += 1
        if self.prepared_until is None or at > self.prepared_until:
            self.prepared_until = at
        return count

    def count_due(self, at: datetime) -> int:
        """How many jobs are due at or before ``at`` (what :meth:`prepare` would plan)."""
        return sum(1 for _ in self._due_by(at))

    def _due_by(self, at: datetime) -> Iterator[tuple[str, datetime]]:
        """The live heap entries due at or before ``at``, in no particular order, without popping:
        a walk of the heap's tree that prunes every subtree whose root is due after ``at``."""
        heap, stack = self._heap, [0]
        while stack:
            i = stack.pop()
            if i >= len(heap) or heap[i][0] > at:
                continue
            due, name = heap[i]
            if self._scheduled.get(name) == due:
                yield name, due
            stack.extend((2 * i + 1, 2 * i + 2))

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
        batch: list[SlotDispatch] = []
        results: list[DispatchResult] = []
        due: list[tuple[str, datetime]] = []
        next_dues: list[tuple[str, datetime | None]] = []

        def send() -> None:  # the next DISPATCH_BATCH items of ``batch``
            if results:
                between()
            results.extend(
                self.store.dispatch(lease, batch[len(results) : len(results) + DISPATCH_BATCH])
            )

        try:
            # A full batch goes out as soon as it is planned: the first slots of a large tick do
            # not wait for the planning of the last ones.
            while (head := self.next_wake()) is not None and head <= now:
                at, name = heapq.heappop(self._heap)
                del self._scheduled[name]
                due.append((name, at))
                job = self.jobs[name]
                watermark = self._watermark.get(name)
                prepared = self._prepared.pop(name, None)
                if prepared is not None and prepared.valid_at(job, watermark, now):
                    plan, items = prepared.plan, prepared.items
                else:
                    plan = plan_slots(job, watermark, now)
                    items = self._items(job, plan)
                if plan.missed_count:
                    self._record_missed(lease, job, plan)
                    report.missed[name] = plan.missed_count
                batch.extend(items)
                next_dues.append((name, plan.next_due))
                if len(batch) - len(results) >= DISPATCH_BATCH:
                    send()
            while len(results) < len(batch):
                send()
        except BaseException:
            for name, at in due:
                self._push(name, at)
            raise
        # Pushed only now: the store calls are what the due slots were waiting for.
        for name, next_due in next_dues:
            self._push(name, next_due)
        unknown: set[str] = set()
        for item, result in zip(batch, results, strict=True):
            if result.status is DispatchStatus.UNKNOWN_JOB:
                unknown.add(item.job)
            else:
                self._settle(item, result)
            report.dispatched.append((item, result))
        if unknown:
            self._resync(lease, sorted(unknown))
        return report

    # -- internals --------------------------------------------------------------------------------

    def _items(self, job: JobConfig, plan: Plan) -> list[SlotDispatch]:
        fingerprint, digest = self._identity[job.name]
        items = []
        for i, slot in enumerate(plan.run):
            next_due = plan.run[i + 1] if i + 1 < len(plan.run) else plan.next_due
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
                )
            )
        return items

    def _record_missed(self, lease: Lease, job: JobConfig, plan: Plan) -> None:
        newest = plan.missed[-1] if plan.missed else None
        state = self.store.advance(
            lease,
            job.name,
            self._identity[job.name][0],
            plan.missed,
            plan.missed_count,
            plan.next_due,
        )
        self._watermark[job.name] = state.watermark
        log.warning(
            "job %s: %d slot(s) missed (catchup=%s)%s",
            job.name,
            plan.missed_count,
            job.catchup,
            f", newest {format_utc(newest)}" if newest else "",
        )

    def _settle(self, item: SlotDispatch, result: DispatchResult) -> None:
        name = item.job
        status = result.status
        if status is DispatchStatus.EARLY:
            # The store's clock is behind the instant we judged by (e.g. a host clock stepped back):
            # come back for this slot shortly.
            retry = item.slot + EARLY_RETRY
            scheduled = self._scheduled.get(name)
            self._push(name, retry if scheduled is None else min(retry, scheduled))
            return
        current = self._watermark.get(name)
        if current is None or item.slot > current:
            self._watermark[name] = item.slot
        if status in (DispatchStatus.QUEUED, DispatchStatus.WAITING):
            log.info("dispatched %s (%s)", result.run_id, status.value)
        elif status is DispatchStatus.SKIPPED:
            log.info("skipped %s: previous run still active (overlap=skip)", result.run_id)

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
            self._push(state.name, self._first_after(state.name, state.watermark, loaded_at))

    def _first_after(self, name: str, watermark: datetime | None, now: datetime) -> datetime | None:
        """First slot the job may still run: after its watermark (catch-up), else after now."""
        job = self.jobs[name]
        return job.schedule.next_after(watermark if watermark is not None else now)

    def _push(self, name: str, at: datetime | None) -> None:
        if at is None:
            self._scheduled.pop(name, None)
            return
        self._scheduled[name] = at
        heapq.heappush(self._heap, (at, name))

    def due_count(self) -> int:
        return len(self._scheduled)
