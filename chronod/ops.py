"""Operator views and actions: what ``chronod status/history/trigger/pause/resume`` show and do.

Functions of a :class:`~chronod.store.base.Store` and a :class:`~chronod.config.Config` that return
frozen snapshots (and JSON-able dicts of them); they never print. The CLI renders them as tables;
a web page can render the same snapshots.

Every instant is store time: leases and heartbeats are written in store time, so "lease left" and
"last seen" are only meaningful against the store's clock, which the caller passes as ``now``
(normally ``store.now()``).

JSON shapes (keys are stable; instants are ISO 8601 UTC ``...Z`` strings, absent values null):

``status``
    ``{"now", "store", "leader", "workers", "queues", "jobs"}`` where ``leader`` is null or
    ``{"node", "epoch", "expires_at", "lease_left_s"}``; ``workers`` is a list of ``{"worker",
    "queues", "seen_at", "age_s", "running", "concurrency"}``, newest first; ``queues`` maps a
    queue name to the number of runs queued on it; ``jobs`` is a list (config order, then retired
    jobs by name) of ``{"job", "kind", "schedule", "timezone", "queue", "retired", "loaded",
    "paused", "last_outcome", "last_outcome_at", "last_success_at", "next_fire",
    "next_fire_local", "next_fire_note", "watermark", "active", "missed"}``. ``kind``,
    ``schedule``, ``timezone``, ``queue`` and the next fire are null for retired jobs (in the store
    but no longer in the config); ``loaded`` is false while the leader has not yet loaded the
    job's current definition; ``next_fire_local`` is in the job's zone, with its offset.
``history``
    ``{"job", "live", "runs"}``: ``live`` are the job's queued/waiting/running runs (oldest first),
    ``runs`` its finished runs (newest first); each is a run object (:func:`run_json`).
run
    ``{"run_id", "job", "manual", "slot", "state", "outcome", "queue", "attempt", "max_attempts",
    "epoch", "created_at", "not_before", "started_at", "finished_at", "duration_s", "worker",
    "exit_code", "error", "output"}``: ``state`` is ``queued``, ``waiting``, ``running`` or
    ``finished``; ``outcome`` is set once finished; ``output`` is the full stored tail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chronod.config import Config, JobConfig
from chronod.instants import format_utc
from chronod.preview import Upcoming, upcoming
from chronod.store.base import (
    JobState,
    LeaderInfo,
    Outcome,
    RunRecord,
    RunState,
    Store,
    WorkerInfo,
)


@dataclass(frozen=True, kw_only=True)
class LeaderStatus:
    node: str
    epoch: int
    expires_at: datetime
    lease_left: timedelta


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    worker: str
    queues: tuple[str, ...]
    seen_at: datetime
    age: timedelta
    running: int
    concurrency: int


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
    """Leader, workers, queue depths and every job (configured, then retired) as of ``now``."""
    states = store.job_states()
    workers = tuple(_worker_status(w, now) for w in store.workers())
    return ClusterStatus(
        now=now,
        store=store.describe(),
        leader=_leader_status(store.leader(), now),
        workers=workers,
        queues=_queue_depths(store.queue_depths(), config, workers),
        jobs=_job_statuses(config, states, now),
    )


def job_history(store: Store, job: str, limit: int, config: Config | None = None) -> JobHistory:
    """The live runs and the newest ``limit`` finished runs of ``job``."""
    return JobHistory(
        job=job,
        config=None if config is None else config.jobs.get(job),
        live=tuple(store.live_runs(job)),
        runs=tuple(store.history(job, limit)),
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


def _worker_status(info: WorkerInfo, now: datetime) -> WorkerStatus:
    return WorkerStatus(
        worker=info.worker,
        queues=info.queues,
        seen_at=info.seen_at,
        age=max(now - info.seen_at, timedelta()),
        running=info.running,
        concurrency=info.concurrency,
    )


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


def trigger(store: Store, job: JobConfig) -> RunRecord:
    """One manual run of ``job`` now, through its normal queue; it consumes no schedule slot."""
    return store.enqueue_manual(job.name, job.queue, job.digest, job.overlap, job.max_attempts)


def pause(store: Store, job: str) -> PauseChange:
    return _set_paused(store, job, paused=True)


def resume(store: Store, job: str) -> PauseChange:
    """Resume ``job``; the store moves its watermark to now, so the paused period never runs."""
    return _set_paused(store, job, paused=False)


def _set_paused(store: Store, job: str, *, paused: bool) -> PauseChange:
    before = store.job_states().get(job)
    was_paused = before is not None and before.paused
    # Written even when nothing changes: set_paused is idempotent (a repeated resume moves nothing),
    # and the read above only words the answer; deciding on it would race another operator.
    state = store.set_paused(job, paused)
    return PauseChange(job=job, changed=was_paused != paused, state=state)


# --------------------------------------------------------------------------------------------------
# JSON


def status_json(status: ClusterStatus) -> dict[str, Any]:
    return {
        "now": format_utc(status.now),
        "store": status.store,
        "leader": _leader_json(status.leader),
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


def _worker_json(worker: WorkerStatus) -> dict[str, Any]:
    return {
        "worker": worker.worker,
        "queues": list(worker.queues),
        "seen_at": format_utc(worker.seen_at),
        "age_s": round(worker.age.total_seconds(), 3),
        "running": worker.running,
        "concurrency": worker.concurrency,
    }


def _utc(instant: datetime | None) -> str | None:
    return None if instant is None else format_utc(instant)


def _enum(value: Outcome | RunState | None) -> str | None:
    return None if value is None else value.value
