"""Operator views and actions: what ``chronod status/history/trigger/pause/resume`` show and do.

Functions of a :class:`~chronod.store.base.Store` and a :class:`~chronod.config.Config` that return
frozen snapshots (and JSON-able dicts of them); they never print. The CLI renders them as tables;
a web page can render the same snapshots.

Every instant is store time: leases and heartbeats are written in store time, so "lease left" and
"last seen" are only meaningful against the store's clock, which the caller passes as ``now``
(normally ``store.now()``).

JSON shapes (keys are stable; instants are ISO 8601 UTC ``...Z`` strings, absent values null):

``status``
    ``{"now", "store", "warnings", "leader", "schedulers", "workers", "queues", "jobs"}`` where
    ``warnings`` is a list of lines, each a reason to distrust this store: no daemon can be using
    it (it does not exist, or no scheduler ever loaded a job of the config on it: the daemon uses
    another store), or its storage makes writes fail (disk full, read-only);
    ``leader`` is null or ``{"node", "epoch", "expires_at", "lease_left_s"}``; ``schedulers`` is a
    list of ``{"node", "role", "seen_at", "age_s"}`` (``role``: ``leader``, ``standby`` or
    ``stopped``), leader first, then newest first; ``workers`` is a list of ``{"worker",
    "queues", "seen_at", "age_s", "running", "concurrency", "stopped"}``, newest first
    (``stopped``: it stopped cleanly; ``seen_at`` is then the instant it said so); ``queues`` maps
    a queue name to the number of runs queued on it; ``jobs`` is a list (config order, then retired
    jobs by name) of ``{"job", "kind", "schedule", "timezone", "queue", "retired", "loaded",
    "paused", "last_outcome", "last_outcome_at", "last_success_at", "next_fire",
    "next_fire_local", "next_fire_note", "watermark", "active", "missed"}``. ``kind``,
    ``schedule``, ``timezone``, ``queue`` and the next fire are null for retired jobs (in the store
    but no longer in the config); ``loaded`` is false while the leader has not yet loaded the
    job's current definition; ``next_fire_local`` is in the job's zone, with its offset.
``history``
    ``{"job", "live", "runs"}``: ``live`` are the job's queued/waiting/running runs (oldest first),
    ``runs`` its finished attempts by slot, newest slot first, the attempts of one run together
    (newest attempt first); each is a run object (:func:`run_json`).
run
    ``{"run_id", "job", "manual", "slot", "state", "outcome", "queue", "attempt", "max_attempts",
    "epoch", "created_at", "not_before", "started_at", "finished_at", "duration_s", "worker",
    "exit_code", "error", "output"}``: ``state`` is ``queued``, ``waiting``, ``running`` or
    ``finished``; ``outcome`` is set once finished; ``output`` is the full stored tail.
``stats``
    ``{"runs", "ran", "succeeded", "success_rate", "outcomes"}`` over a job's kept history, each
    run counted once by its final outcome (:func:`run_stats`).
``timeline``
    ``{"now", "at", "start", "end", "zone", "jobs"}``; each job is ``{"job", "timezone",
    "schedule", "paused", "fires", "more_fires", "skipped_days", "offsets", "runs"}``: ``fires``
    are ``{"utc", "local", "at", "note"}`` (``at`` in the chosen zone), ``skipped_days``
    ``{"first", "last", "start", "end", "note"}`` (local dates, and the UTC instants bounding
    them), ``offsets`` ``{"start", "end", "offset_s", "abbreviation"}`` (the chosen zone's UTC
    offset over the window, so a page can label instants without a tz database), ``runs`` run
    objects without ``output`` (:func:`timeline_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from chronod.config import Config, JobConfig
from chronod.errors import JobNotLoaded, StoreMissing
from chronod.instants import format_utc
from chronod.preview import Upcoming, upcoming
from chronod.schedules import Schedule, WindowedSchedule
from chronod.schedules.solar import SolarSchedule
from chronod.store.base import (
    JobState,
    LeaderInfo,
    Outcome,
    Presence,
    RunRecord,
    RunState,
    Store,
    WorkerInfo,
)
from chronod.tz import Zone, get_zone


@dataclass(frozen=True, kw_only=True)
class LeaderStatus:
    node: str
    epoch: int
    expires_at: datetime
    lease_left: timedelta


SchedulerRole = Literal["leader", "standby", "stopped"]


@dataclass(frozen=True, kw_only=True)
class SchedulerStatus:
    """A ``chronod run`` process: the leader, a standby, or one that stopped cleanly."""

    node: str
    role: SchedulerRole
    seen_at: datetime | None  # its last announcement (None: the leader, not announced yet)
    age: timedelta | None


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    worker: str
    queues: tuple[str, ...]
    seen_at: datetime  # its last registration, or the instant it said it stopped
    age: timedelta
    running: int
    concurrency: int
    stopped: bool = False  # stopped cleanly (listed until its entry expires)


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """One job as configured (``config`` None once retired) and as stored (``state`` None before
    the leader first loads it)."""

    name: str
    config: JobConfig | None
    state: JobState | None
    next_fire: Upcoming | None

    @property
    def retired(self) -> bool:
        return self.config is None

    @property
    def loaded(self) -> bool:
        """Whether the stored definition is the configured one (False until the leader loads it)."""
        return (
            self.config is not None
            and self.state is not None
            and self.state.fingerprint == self.config.fingerprint
        )

    @property
    def paused(self) -> bool:
        return self.state is not None and self.state.paused


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    now: datetime  # store time the snapshot was taken at
    store: str  # where the store is, without credentials
    leader: LeaderStatus | None
    workers: tuple[WorkerStatus, ...]
    queues: Mapping[str, int]
    jobs: tuple[JobStatus, ...]
    schedulers: tuple[SchedulerStatus, ...] = ()
    # Why this store may not be the one to trust: unused by any daemon (see the module docs), or
    # its storage makes writes fail (Store.storage_problems).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class JobHistory:
    job: str
    config: JobConfig | None
    live: tuple[RunRecord, ...]  # oldest first
    runs: tuple[RunRecord, ...]  # finished, newest first


@dataclass(frozen=True, kw_only=True)
class PauseChange:
    job: str
    changed: bool  # False when the job already was in the requested state
    state: JobState


# --------------------------------------------------------------------------------------------------
# Snapshots


def cluster_status(store: Store, config: Config, now: datetime) -> ClusterStatus:
    """Leader, schedulers, workers, queue depths and every job (configured, then retired) as of
    ``now``; with a warning when no scheduler ever loaded a job of ``config`` on this store."""
    states = store.job_states()
    presences = store.presences()
    leader = _leader_status(store.leader(), now)
    workers = tuple(_worker_statuses(store.workers(), presences, now))
    return ClusterStatus(
        now=now,
        store=store.describe(),
        leader=leader,
        schedulers=_scheduler_statuses(leader, presences, now),
        workers=workers,
        queues=_queue_depths(store.queue_depths(), config, workers),
        jobs=_job_statuses(config, states, now),
        warnings=(
            *filter(None, [_unused_store_warning(config, states)]),
            *store.storage_problems(),
        ),
    )


def missing_store_status(store: Store, config: Config, now: datetime) -> ClusterStatus:
    """The status of a store that does not exist (:class:`StoreMissing`), read without creating
    it: the configured jobs and their next fires, and a warning in place of everything a daemon
    would have written."""
    return ClusterStatus(
        now=now,
        store=store.describe(),
        leader=None,
        workers=(),
        queues=_queue_depths({}, config, ()),
        jobs=_job_statuses(config, {}, now),
        warnings=(
            "this store does not exist, so no chronod process uses it; "
            + _another_store_hint(config),
        ),
    )


def job_history(store: Store, job: str, limit: int, config: Config | None = None) -> JobHistory:
    """The live runs and the newest ``limit`` finished attempts of ``job``, the finished ones in
    slot order (:func:`by_slot`)."""
    return JobHistory(
        job=job,
        config=None if config is None else config.jobs.get(job),
        live=tuple(store.live_runs(job)),
        runs=by_slot(store.history(job, limit)),
    )


def by_slot(runs: Iterable[RunRecord]) -> tuple[RunRecord, ...]:
    """``runs`` (live runs and finished attempts) newest slot first, the attempts of one run
    together: its live record (the attempt under way or the retry to come) first, then its
    finished attempts, newest first.

    History is kept in the order attempts finished, which is not the order of their slots: a slot
    retried or held behind an overlap finishes after later ones, and a table in that order puts
    slots out of sequence and splits a run's attempts apart.
    """
    return tuple(
        sorted(
            runs,
            key=lambda r: (r.slot, r.run_id, not isinstance(r.state, Outcome), r.attempt),
            reverse=True,
        )
    )


def next_fire(job: JobConfig, watermark: datetime | None, now: datetime) -> Upcoming | None:
    """The leader's rule: the first slot after ``max(watermark, now)``.

    Slots at or before the watermark were decided already; slots between the watermark and now
    are being dispatched (or recorded as missed) as we speak, so the one worth showing is the next
    one after now.
    """
    floor = now if watermark is None else max(watermark, now)
    fires = upcoming(job, floor, 1)
    return fires[0] if fires else None


def _leader_status(info: LeaderInfo | None, now: datetime) -> LeaderStatus | None:
    if info is None:
        return None
    return LeaderStatus(
        node=info.node,
        epoch=info.epoch,
        expires_at=info.expires_at,
        lease_left=max(info.expires_at - now, timedelta()),
    )


def _worker_statuses(
    infos: Iterable[WorkerInfo], presences: Iterable[Presence], now: datetime
) -> list[WorkerStatus]:
    # A clean stop is announced apart from the registrations, which only expire; it counts when
    # it came after the worker's last registration.
    stops = {p.member: p.seen_at for p in presences if p.role == "worker" and p.stopped}
    found = []
    for info in infos:
        stopped_at = stops.get(info.worker)
        if stopped_at is not None and stopped_at < info.seen_at:
            stopped_at = None  # registered again since (not expected: a pid is one process)
        seen_at = info.seen_at if stopped_at is None else stopped_at
        found.append(
            WorkerStatus(
                worker=info.worker,
                queues=info.queues,
                seen_at=seen_at,
                age=max(now - seen_at, timedelta()),
                running=info.running if stopped_at is None else 0,
                concurrency=info.concurrency,
                stopped=stopped_at is not None,
            )
        )
    return found


def _scheduler_statuses(
    leader: LeaderStatus | None, presences: Iterable[Presence], now: datetime
) -> tuple[SchedulerStatus, ...]:
    """The leader first (from the lease, whether or not it announced itself yet), then every
    other scheduler announced in the last minute, newest first."""
    found: list[SchedulerStatus] = []
    leader_node = None if leader is None else leader.node
    for presence in presences:
        if presence.role != "scheduler":
            continue
        role: SchedulerRole = "stopped" if presence.stopped else "standby"
        if presence.member == leader_node and not presence.stopped:
            role = "leader"
        found.append(
            SchedulerStatus(
                node=presence.member,
                role=role,
                seen_at=presence.seen_at,
                age=max(now - presence.seen_at, timedelta()),
            )
        )
    if leader_node is not None and not any(s.role == "leader" for s in found):
        found.append(SchedulerStatus(node=leader_node, role="leader", seen_at=None, age=None))
    return tuple(sorted(found, key=lambda s: s.role != "leader"))  # stable: newest first stays


def _unused_store_warning(config: Config, states: Mapping[str, JobState]) -> str | None:
    if not config.jobs or any(ever_loaded(states.get(name)) for name in config.jobs):
        return None
    return (
        f"no scheduler has ever loaded a job of {config.path} on this store; "
        + _another_store_hint(config)
    )


def _another_store_hint(config: Config) -> str:
    return (
        "if a daemon reads this config, it keeps its state in another store: name the store "
        f"in the config's [chronod] store ({config.path}), not in a daemon's environment or "
        "command line"
    )


def ever_loaded(state: JobState | None) -> bool:
    """Whether a scheduler has loaded the job on this store (its current definition or an
    earlier one). A job a pause or a manual run created before any load has an empty
    fingerprint, and so has one retired by a scheduler whose config no longer has it: in both
    cases no daemon reading the store schedules it."""
    return state is not None and state.fingerprint != ""


def _queue_depths(
    depths: Mapping[str, int], config: Config, workers: Sequence[WorkerStatus]
) -> dict[str, int]:
    # The store only knows queues that hold runs; an empty queue someone configured or serves is
    # worth a 0 (a job whose queue nobody serves shows up as a growing number here).
    names = set(depths) | {j.queue for j in config.jobs.values()}
    names |= {q for w in workers for q in w.queues}
    return {name: depths.get(name, 0) for name in sorted(names)}


def _job_statuses(
    config: Config, states: Mapping[str, JobState], now: datetime
) -> tuple[JobStatus, ...]:
    configured = [
        JobStatus(
            name=name,
            config=job,
            state=states.get(name),
            next_fire=next_fire(job, _watermark(states.get(name)), now),
        )
        for name, job in config.jobs.items()
    ]
    retired = [
        JobStatus(name=name, config=None, state=states[name], next_fire=None)
        for name in sorted(set(states) - set(config.jobs))
    ]
    return (*configured, *retired)


def _watermark(state: JobState | None) -> datetime | None:
    return None if state is None else state.watermark


# --------------------------------------------------------------------------------------------------
# Actions


def trigger(store: Store, job: JobConfig, *, force: bool = False) -> RunRecord:
    """One manual run of ``job`` now, through its normal queue; it consumes no schedule slot.

    Refused (:class:`JobNotLoaded`) unless a scheduler has loaded the job on ``store`` or
    ``force``: see :func:`require_loaded`.
    """
    if not force:
        require_loaded(store, job.name, "trigger")
    return store.enqueue_manual(job.name, job.queue, job.digest, job.overlap, job.max_attempts)


def pause(store: Store, job: str, *, force: bool = False) -> PauseChange:
    """Pause ``job``; refused like :func:`trigger` unless a scheduler has loaded it here."""
    return _set_paused(store, job, paused=True, force=force)


def resume(store: Store, job: str, *, force: bool = False) -> PauseChange:
    """Resume ``job``; the store moves its watermark to now, so the paused period never runs.
    Refused like :func:`trigger` unless a scheduler has loaded it here."""
    return _set_paused(store, job, paused=False, force=force)


def require_loaded(store: Store, job: str, action: str) -> dict[str, JobState]:
    """The stored job states, unless no scheduler ever loaded ``job`` on ``store``: then refuse
    to ``action`` it (:class:`JobNotLoaded`), as on a store that does not exist.

    Such a store is not the one any daemon schedules the job from (another config's, one made
    by a command that looked in the wrong place, an empty Redis namespace), so a pause or a
    trigger there would succeed and change nothing: the worst kind of failure for an operator
    who pauses a job before a risky change. One line names the store and what to check. (A
    scheduler loading or retiring the job meanwhile can only make the answer a moment early.)
    """
    try:
        states = store.job_states()
    except StoreMissing:
        raise JobNotLoaded(
            f"refusing to {action} {job}: store {store.describe()} does not exist, so no daemon "
            "uses it; check the store the daemon uses ([chronod] store in its config, or "
            "--store) and that this command reads the same config"
        ) from None
    if not ever_loaded(states.get(job)):
        raise JobNotLoaded(
            f"refusing to {action} {job}: no scheduler has loaded it on store "
            f"{store.describe()}; check that this is the store the daemon uses ('chronod "
            "status' shows its leader) and that the daemon's config has the job (reload it "
            "after adding one)"
        )
    return states


def _set_paused(store: Store, job: str, *, paused: bool, force: bool) -> PauseChange:
    if force:
        states = store.job_states()
    else:
        states = require_loaded(store, job, "pause" if paused else "resume")
    before = states.get(job)
    was_paused = before is not None and before.paused
    # Written even when nothing changes: set_paused is idempotent (a repeated resume moves nothing),
    # and the read above only words the answer; deciding the write on it would race another
    # operator.
    state = store.set_paused(job, paused)
    return PauseChange(job=job, changed=was_paused != paused, state=state)


# --------------------------------------------------------------------------------------------------
# Run statistics and the timeline (what the web page draws)

# Outcomes of slots that never executed: they say nothing about whether the job works.
NOT_RUN = frozenset({Outcome.SKIPPED, Outcome.MISSED, Outcome.QUARANTINED, Outcome.UNCERTAIN})
# Fires listed per job and window at most: an every-second job has 604,800 in a week, more than
# any page can draw; past the cap the page draws the row as dense instead of mark by mark.
MAX_TIMELINE_FIRES = 500
TimelineZone = Literal["job", "utc"]
_TICK = timedelta(microseconds=1)
_DAY = timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class RunStats:
    """A job's kept history, each run counted once by its final outcome."""

    runs: int  # distinct runs whose final outcome is in the kept history
    ran: int  # of those, runs that executed (not skipped or missed)
    succeeded: int
    outcomes: Mapping[str, int]  # final outcome -> runs

    @property
    def success_rate(self) -> float | None:
        """``succeeded / ran``; None while nothing ran."""
        return None if self.ran == 0 else self.succeeded / self.ran


@dataclass(frozen=True, kw_only=True)
class SkippedDays:
    """Local dates (job zone, both inclusive) without the solar event, and the instants bounding
    them (local midnight before ``first``, local midnight after ``last``)."""

    first: date
    last: date
    start: datetime
    end: datetime
    note: str | None  # the note of the fire after the gap, which names the reason


@dataclass(frozen=True, kw_only=True)
class OffsetSpan:
    """A stretch of the window during which the zone's UTC offset stays the same."""

    start: datetime
    end: datetime
    offset: timedelta
    abbreviation: str


@dataclass(frozen=True, kw_only=True)
class JobTimeline:
    job: JobConfig
    paused: bool
    fires: tuple[Upcoming, ...]  # after ``at`` up to the window's end, at most MAX_TIMELINE_FIRES
    more_fires: bool  # the window holds fires beyond ``fires``
    skipped: tuple[SkippedDays, ...]
    runs: tuple[RunRecord, ...]  # live and kept runs touching the window, oldest slot first


@dataclass(frozen=True, kw_only=True)
class Timeline:
    now: datetime  # store time
    at: datetime  # the instant upcoming fires are counted from (normally ``now``)
    start: datetime
    end: datetime
    jobs: tuple[JobTimeline, ...]


def run_stats(history: Iterable[RunRecord], live: Iterable[str] = ()) -> RunStats:
    """Statistics over ``history`` (newest first), each run counted by its newest entry.

    History holds one entry per attempt, so a run retried twice has three; only its newest is its
    final outcome. Runs named in ``live`` (still queued or running, e.g. between retries) have no
    final outcome yet and are left out.
    """
    pending = set(live)
    final: dict[str, Outcome] = {}
    for run in history:
        if run.run_id not in pending and run.run_id not in final and isinstance(run.state, Outcome):
            final[run.run_id] = run.state
    outcomes: dict[str, int] = {}
    for outcome in final.values():
        outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
    return RunStats(
        runs=len(final),
        ran=sum(1 for o in final.values() if o not in NOT_RUN),
        succeeded=outcomes.get(Outcome.SUCCEEDED.value, 0),
        outcomes=outcomes,
    )


def timeline(
    store: Store,
    config: Config,
    *,
    now: datetime,
    at: datetime,
    before: timedelta,
    after: timedelta,
) -> Timeline:
    """Every configured job over ``[at - before, at + after]``: upcoming fires after ``at``, solar
    days without the event, and the runs (live or in the kept history) inside the window."""
    start, end = at - before, at + after
    states = store.job_states()
    live = store.live_runs()
    jobs = []
    for job in config.jobs.values():
        fires, more = fires_between(job, at, end)
        runs = [*store.history(job.name, config.daemon.history), *_of_job(live, job.name)]
        state = states.get(job.name)
        jobs.append(
            JobTimeline(
                job=job,
                paused=state is not None and state.paused,
                fires=fires,
                more_fires=more,
                skipped=skipped_days(job, start, end),
                runs=_runs_between(runs, start, end, now),
            )
        )
    return Timeline(now=now, at=at, start=start, end=end, jobs=tuple(jobs))


def fires_between(
    job: JobConfig, after: datetime, until: datetime, limit: int = MAX_TIMELINE_FIRES
) -> tuple[tuple[Upcoming, ...], bool]:
    """Fires of ``job`` in ``(after, until]``, at most ``limit``; and whether more were left out."""
    zone = job.schedule.zone
    fires: list[Upcoming] = []
    for fire in job.schedule.fires(after):
        if fire.at > until:
            return tuple(fires), False
        if len(fires) == limit:
            return tuple(fires), True
        fires.append(
            Upcoming(job=job.name, at=fire.at, local=zone.to_local(fire.at), note=fire.note)
        )
    return tuple(fires), False


def skipped_days(job: JobConfig, start: datetime, end: datetime) -> tuple[SkippedDays, ...]:
    """Local dates between ``start`` and ``end`` on which a solar job's event does not happen.

    Fire notes name such gaps too, but only on the fire after the gap, which may lie far beyond the
    window (a polar night lasts weeks); a page needs the days themselves. The walk follows the
    *events* (fire minus offset), because an event's local date is what the rule is about. Other
    kinds have no such days: a cron rule that skips a day does so by definition.
    """
    solar = _solar(job.schedule)
    if solar is None:
        return ()
    zone = solar.zone
    expected = zone.wall(start).date()  # first local date not yet known to have its event
    last_day = zone.wall(end).date()
    found: list[SkippedDays] = []
    walk = _local_midnight(zone, expected) + solar.offset - _TICK  # events from that midnight on
    for fire in solar.fires(walk):
        day = zone.wall(fire.at - solar.offset).date()
        if day > expected:
            found.append(_skipped(zone, expected, min(day - _DAY, last_day), fire.note))
        if day >= last_day:
            return tuple(found)
        expected = max(expected, day + _DAY)
    # The schedule ended (no event for a year, e.g. dusk at -30° at a pole): nothing comes back.
    found.append(_skipped(zone, expected, last_day, None))
    return tuple(found)


def offset_spans(zone: Zone, start: datetime, end: datetime) -> tuple[OffsetSpan, ...]:
    """``zone``'s UTC offsets over ``[start, end]``, one span per offset change."""
    spans: list[OffsetSpan] = []
    cursor = start
    while True:
        change = zone.next_transition(cursor)
        stop = end if change is None or change >= end else change
        spans.append(
            OffsetSpan(
                start=cursor,
                end=stop,
                offset=zone.offset_at(cursor),
                abbreviation=zone.abbreviation(cursor),
            )
        )
        if stop == end:
            return tuple(spans)
        cursor = stop


def _solar(schedule: Schedule) -> SolarSchedule | None:
    while isinstance(schedule, WindowedSchedule):
        schedule = schedule.inner
    return schedule if isinstance(schedule, SolarSchedule) else None


def _local_midnight(zone: Zone, day: date) -> datetime:
    resolution = zone.resolve(datetime.combine(day, time()))
    if resolution.instants:
        return resolution.instants[0]
    assert resolution.gap_end is not None  # midnight inside a DST gap: the day starts after it
    return resolution.gap_end


def _skipped(zone: Zone, first: date, last: date, note: str | None) -> SkippedDays:
    return SkippedDays(
        first=first,
        last=last,
        start=_local_midnight(zone, first),
        end=_local_midnight(zone, last + _DAY),
        note=note,
    )


def _of_job(runs: Iterable[RunRecord], job: str) -> list[RunRecord]:
    return [run for run in runs if run.job == job]


def _runs_between(
    runs: Iterable[RunRecord], start: datetime, end: datetime, now: datetime
) -> tuple[RunRecord, ...]:
    """Runs whose slot or execution (a running one: up to ``now``) touches ``[start, end]``."""
    inside = []
    for run in runs:
        first = min(run.slot, run.started_at or run.slot)
        last = max(run.slot, run.finished_at or (now if run.started_at else run.slot))
        if first <= end and last >= start:
            inside.append(run)
    return tuple(sorted(inside, key=lambda r: (r.slot, r.started_at or r.slot, r.attempt)))


# --------------------------------------------------------------------------------------------------
# JSON


def status_json(status: ClusterStatus) -> dict[str, Any]:
    return {
        "now": format_utc(status.now),
        "store": status.store,
        "warnings": list(status.warnings),
        "leader": _leader_json(status.leader),
        "schedulers": [_scheduler_json(s) for s in status.schedulers],
        "workers": [_worker_json(w) for w in status.workers],
        "queues": dict(status.queues),
        "jobs": [job_json(j) for j in status.jobs],
    }


def job_json(job: JobStatus) -> dict[str, Any]:
    config, state, fire = job.config, job.state, job.next_fire
    return {
        "job": job.name,
        "kind": None if config is None else config.kind,
        "schedule": None if config is None else config.schedule.describe(),
        "timezone": None if config is None else config.timezone,
        "queue": None if config is None else config.queue,
        "retired": job.retired,
        "loaded": job.loaded,
        "paused": job.paused,
        "last_outcome": _enum(state.last_outcome) if state else None,
        "last_outcome_at": _utc(state.last_outcome_at) if state else None,
        "last_success_at": _utc(state.last_success_at) if state else None,
        "next_fire": None if fire is None else format_utc(fire.at),
        "next_fire_local": None if fire is None else fire.local.isoformat(),
        "next_fire_note": None if fire is None else fire.note,
        "watermark": _utc(state.watermark) if state else None,
        "active": state.active if state else 0,
        "missed": state.missed if state else 0,
    }


def history_json(history: JobHistory) -> dict[str, Any]:
    return {
        "job": history.job,
        "live": [run_json(r) for r in history.live],
        "runs": [run_json(r) for r in history.runs],
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    finished = isinstance(run.state, Outcome)
    return {
        "run_id": run.run_id,
        "job": run.job,
        "manual": run.manual,
        "slot": format_utc(run.slot),
        "state": "finished" if finished else _enum(run.state),
        "outcome": _enum(run.state) if finished else None,
        "queue": run.queue,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "epoch": run.epoch,
        "created_at": format_utc(run.created_at),
        "not_before": _utc(run.not_before),
        "started_at": _utc(run.started_at),
        "finished_at": _utc(run.finished_at),
        "duration_s": None if run.duration is None else round(run.duration.total_seconds(), 3),
        "worker": run.worker,
        "exit_code": run.exit_code,
        "error": run.error,
        "output": run.output,
    }


def pause_json(change: PauseChange) -> dict[str, Any]:
    return {
        "job": change.job,
        "paused": change.state.paused,
        "changed": change.changed,
        "watermark": _utc(change.state.watermark),
    }


def _leader_json(leader: LeaderStatus | None) -> dict[str, Any] | None:
    if leader is None:
        return None
    return {
        "node": leader.node,
        "epoch": leader.epoch,
        "expires_at": format_utc(leader.expires_at),
        "lease_left_s": round(leader.lease_left.total_seconds(), 3),
    }


def _scheduler_json(scheduler: SchedulerStatus) -> dict[str, Any]:
    return {
        "node": scheduler.node,
        "role": scheduler.role,
        "seen_at": _utc(scheduler.seen_at),
        "age_s": None if scheduler.age is None else round(scheduler.age.total_seconds(), 3),
    }


def _worker_json(worker: WorkerStatus) -> dict[str, Any]:
    return {
        "worker": worker.worker,
        "queues": list(worker.queues),
        "seen_at": format_utc(worker.seen_at),
        "age_s": round(worker.age.total_seconds(), 3),
        "running": worker.running,
        "concurrency": worker.concurrency,
        "stopped": worker.stopped,
    }


def _utc(instant: datetime | None) -> str | None:
    return None if instant is None else format_utc(instant)


def _enum(value: Outcome | RunState | None) -> str | None:
    return None if value is None else value.value


def stats_json(stats: RunStats) -> dict[str, Any]:
    rate = stats.success_rate
    return {
        "runs": stats.runs,
        "ran": stats.ran,
        "succeeded": stats.succeeded,
        "success_rate": None if rate is None else round(rate, 4),
        "outcomes": dict(stats.outcomes),
    }


def run_json_local(run: RunRecord, zone: Zone) -> dict[str, Any]:
    """:func:`run_json` plus ``slot_local`` and ``finished_local``: those instants in ``zone``
    (ISO 8601 with offset; ``finished_local`` null until the run ends)."""
    finished = None if run.finished_at is None else zone.to_local(run.finished_at).isoformat()
    return {
        **run_json(run),
        "slot_local": zone.to_local(run.slot).isoformat(),
        "finished_local": finished,
    }


def timeline_json(line: Timeline, zone: TimelineZone = "job") -> dict[str, Any]:
    """``zone`` chooses the zone of each fire's ``at`` and of ``offsets``: the job's, or UTC."""
    return {
        "now": format_utc(line.now),
        "at": format_utc(line.at),
        "start": format_utc(line.start),
        "end": format_utc(line.end),
        "zone": zone,
        "jobs": [_job_timeline_json(job, line, zone) for job in line.jobs],
    }


def _job_timeline_json(job: JobTimeline, line: Timeline, zone: TimelineZone) -> dict[str, Any]:
    config = job.job
    shown = config.schedule.zone if zone == "job" else get_zone("UTC")
    return {
        "job": config.name,
        "timezone": config.timezone,
        "schedule": config.schedule.describe(),
        "paused": job.paused,
        "fires": [
            {
                "utc": format_utc(f.at),
                "local": f.local.isoformat(),
                "at": f.local.isoformat() if zone == "job" else format_utc(f.at),
                "note": f.note,
            }
            for f in job.fires
        ],
        "more_fires": job.more_fires,
        "skipped_days": [
            {
                "first": d.first.isoformat(),
                "last": d.last.isoformat(),
                "start": format_utc(d.start),
                "end": format_utc(d.end),
                "note": d.note,
            }
            for d in job.skipped
        ],
        "offsets": [
            {
                "start": format_utc(o.start),
                "end": format_utc(o.end),
                "offset_s": int(o.offset.total_seconds()),
                "abbreviation": o.abbreviation,
            }
            for o in offset_spans(shown, line.start, line.end)
        ],
        "runs": [_timeline_run_json(run) for run in job.runs],
    }


def _timeline_run_json(run: RunRecord) -> dict[str, Any]:
    # The output tail (up to 64 KiB per run) stays on the job page: the timeline is polled.
    data = run_json(run)
    del data["output"]
    return data
