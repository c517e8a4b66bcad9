"""Snapshots of a store and a config: cluster status, a job's history, run statistics.

Every instant is store time: leases and heartbeats are written in store time, so "lease left" and
"last seen" are only meaningful against the store's clock, which the caller passes as ``now``
(normally ``store.now()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from chronod.config import Config, JobConfig
from chronod.preview import Upcoming, upcoming
from chronod.schedules.after import AfterSchedule
from chronod.store.base import (
    ChannelDelivery,
    JobState,
    LeaderInfo,
    OutboxStats,
    Outcome,
    Presence,
    RunRecord,
    Store,
    WorkerInfo,
)


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

    @property
    def finished(self) -> bool:
        """Whether the loaded schedule has ended and its last slot was decided, with no run of
        it still live (an ``at`` job after its last instant, a window after its ``end``)."""
        if not self.loaded or self.state is None or self.state.active:
            return False
        assert self.config is not None
        if isinstance(self.config.schedule, AfterSchedule):
            return False  # no slots of its own: it never ends
        watermark = self.state.watermark
        return watermark is not None and self.config.schedule.next_fire(watermark) is None


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    now: datetime  # store time the snapshot was taken at
    store: str  # where the store is, without credentials
    leader: LeaderStatus | None
    workers: tuple[WorkerStatus, ...]
    queues: Mapping[str, int]
    jobs: tuple[JobStatus, ...]
    schedulers: tuple[SchedulerStatus, ...] = ()
    # Notifications (chronod.alerts): every configured channel (and any other the courier
    # reported, such as 'ping') with its last delivery; the outbox. Nothing secret.
    channels: tuple[ChannelDelivery, ...] = ()
    outbox: OutboxStats | None = None
    # Why this store may not be the one to trust: unused by any daemon (see the module docs), or
    # its storage makes writes fail (Store.storage_problems).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class JobHistory:
    job: str
    config: JobConfig | None
    live: tuple[RunRecord, ...]  # oldest first
    runs: tuple[RunRecord, ...]  # finished, newest first


# --------------------------------------------------------------------------------------------------
# Status and history


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
        channels=channel_deliveries(config, store.deliveries()),
        outbox=store.outbox_stats(),
        warnings=(
            *filter(None, [_unused_store_warning(config, states)]),
            *store.storage_problems(),
        ),
    )


def channel_deliveries(
    config: Config, noted: Sequence[ChannelDelivery]
) -> tuple[ChannelDelivery, ...]:
    """The configured channels in config order (never used: empty), then the others noted."""
    found = {delivery.channel: delivery for delivery in noted}
    named = [found.pop(name, ChannelDelivery(channel=name)) for name in config.channels]
    return (*named, *sorted(found.values(), key=lambda d: d.channel))


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
# Run statistics (the web page's job summaries)

# Outcomes of slots that never executed: they say nothing about whether the job works.
NOT_RUN = frozenset({Outcome.SKIPPED, Outcome.MISSED, Outcome.QUARANTINED, Outcome.UNCERTAIN})


def run_notes(run: RunRecord) -> list[str]:
    """The lines ``chronod history`` shows under a run's row before its output: the run it
    followed (a job with ``after``), the error or why it did not run."""
    lines = [] if run.upstream_run_id is None else [f"    after: {run.upstream_run_id}"]
    label = "reason" if run.state in NOT_RUN else "error"
    return lines + ([f"    {label}: {run.error}"] if run.error else [])


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
