"""The JSON shapes of the operator views (``--json`` and the web API).

Keys are stable; instants are ISO 8601 UTC ``...Z`` strings, absent values null. The timeline's
shape is :mod:`chronod.web.timeline`'s.

``status``
    ``{"now", "store", "warnings", "leader", "schedulers", "workers", "queues", "jobs",
    "notifications"}`` where
    ``warnings`` is a list of lines, each a reason to distrust this store: no daemon can be using
    it (it does not exist, or no scheduler ever loaded a job of the config on it: the daemon uses
    another store), or its storage makes writes fail (disk full, read-only);
    ``leader`` is null or ``{"node", "epoch", "expires_at", "lease_left_s"}``; ``schedulers`` is a
    list of ``{"node", "role", "seen_at", "age_s"}`` (``role``: ``leader``, ``standby`` or
    ``stopped``), leader first, then newest first; ``workers`` is a list of ``{"worker",
    "queues", "seen_at", "age_s", "running", "concurrency", "stopped"}``, newest first
    (``stopped``: it stopped cleanly; ``seen_at`` is then the instant it said so); ``queues`` maps
    a queue name to the number of runs queued on it; ``jobs`` is a list (config order, then retired
    jobs by name) of ``{"job", "kind", "schedule", "after", "when", "timezone", "queue", "retired",
    "loaded", "paused", "finished", "last_outcome", "last_outcome_at", "last_success_at",
    "next_fire", "next_fire_local", "next_fire_note", "watermark", "active", "missed"}``. ``kind``,
    ``schedule``, ``timezone``, ``queue`` and the next fire are null for retired jobs (in the store
    but no longer in the config); ``loaded`` is false while the leader has not yet loaded the
    job's current definition; ``next_fire_local`` is in the job's zone, with its offset;
    ``after`` (the jobs it follows) and ``when`` are null but for a job with ``after``.
    ``notifications`` is ``{"outbox": {"depth", "dropped"} or null, "channels": [{"channel",
    "last_ok_at", "last_error", "last_error_at"}]}`` (docs/notifications.md).
``history``
    ``{"job", "live", "runs"}``: ``live`` are the job's queued/waiting/running runs (oldest first),
    ``runs`` its finished attempts by slot, newest slot first, the attempts of one run together
    (newest attempt first); each is a run object (:func:`run_json`).
run
    ``{"run_id", "job", "manual", "upstream_run_id", "slot", "state", "outcome", "queue",
    "attempt", "max_attempts", "epoch", "created_at", "not_before", "started_at", "finished_at",
    "duration_s", "worker", "exit_code", "error", "output"}``: ``state`` is ``queued``,
    ``waiting``, ``running`` or ``finished``; ``outcome`` is set once finished; ``output`` is the
    full stored tail; ``upstream_run_id`` names the run a job with ``after`` followed (else null).
``stats``
    ``{"runs", "ran", "succeeded", "success_rate", "outcomes"}`` over a job's kept history, each
    run counted once by its final outcome (:func:`~chronod.ops.status.run_stats`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chronod.config import JobConfig
from chronod.instants import format_utc
from chronod.ops.actions import PauseChange
from chronod.ops.status import (
    ClusterStatus,
    JobHistory,
    JobStatus,
    LeaderStatus,
    RunStats,
    SchedulerStatus,
    WorkerStatus,
)
from chronod.schedules.after import AfterSchedule
from chronod.store.base import Outcome, RunRecord, RunState
from chronod.tz import Zone


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
        "notifications": notifications_json(status),
    }


def notifications_json(status: ClusterStatus) -> dict[str, Any]:
    outbox = status.outbox
    return {
        "outbox": None if outbox is None else {"depth": outbox.depth, "dropped": outbox.dropped},
        "channels": [
            {
                "channel": c.channel,
                "last_ok_at": _utc(c.last_ok_at),
                "last_error": c.last_error,
                "last_error_at": _utc(c.last_error_at),
            }
            for c in status.channels
        ],
    }


def job_json(job: JobStatus) -> dict[str, Any]:
    config, state, fire = job.config, job.state, job.next_fire
    return {
        "job": job.name,
        "kind": None if config is None else config.kind,
        "schedule": None if config is None else config.schedule.describe(),
        **_follows(config),
        "timezone": None if config is None else config.timezone,
        "queue": None if config is None else config.queue,
        "retired": job.retired,
        "loaded": job.loaded,
        "paused": job.paused,
        "finished": job.finished,
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
        "upstream_run_id": run.upstream_run_id,
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


def _follows(config: JobConfig | None) -> dict[str, Any]:
    """``after`` (the jobs it follows, else null) and ``when`` of a job."""
    schedule = None if config is None else config.schedule
    if not isinstance(schedule, AfterSchedule):
        return {"after": None, "when": None}
    return {"after": list(schedule.upstreams), "when": schedule.when}
