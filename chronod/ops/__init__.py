"""Operator views and actions: what ``chronod status/history/trigger/pause/resume`` show and do.

Functions of a :class:`~chronod.store.base.Store` and a :class:`~chronod.config.Config` that return
frozen snapshots (and JSON-able dicts of them); they never print. The CLI renders them as tables;
the web page renders the same snapshots, and draws its timeline with :mod:`chronod.web.timeline`.

Every instant is store time: leases and heartbeats are written in store time, so "lease left" and
"last seen" are only meaningful against the store's clock, which the caller passes as ``now``
(normally ``store.now()``).

The package, by concern: :mod:`~chronod.ops.status` (snapshots: status, history, run
statistics), :mod:`~chronod.ops.actions` (trigger, pause, resume) and :mod:`~chronod.ops.shapes`
(their JSON shapes, documented there). Use it as ``from chronod import ops``, then ``ops.X``.
"""

from __future__ import annotations

from chronod.ops.actions import PauseChange, pause, require_loaded, resume, trigger
from chronod.ops.shapes import (
    history_json,
    job_json,
    pause_json,
    run_json,
    run_json_local,
    stats_json,
    status_json,
)
from chronod.ops.status import (
    NOT_RUN,
    ClusterStatus,
    JobHistory,
    JobStatus,
    LeaderStatus,
    RunStats,
    SchedulerRole,
    SchedulerStatus,
    WorkerStatus,
    by_slot,
    cluster_status,
    ever_loaded,
    job_history,
    missing_store_status,
    next_fire,
    run_notes,
    run_stats,
)

__all__ = [
    "NOT_RUN",
    "ClusterStatus",
    "JobHistory",
    "JobStatus",
    "LeaderStatus",
    "PauseChange",
    "RunStats",
    "SchedulerRole",
    "SchedulerStatus",
    "WorkerStatus",
    "by_slot",
    "cluster_status",
    "ever_loaded",
    "history_json",
    "job_history",
    "job_json",
    "missing_store_status",
    "next_fire",
    "pause",
    "pause_json",
    "require_loaded",
    "resume",
    "run_json",
    "run_json_local",
    "run_notes",
    "run_stats",
    "stats_json",
    "status_json",
    "trigger",
]
