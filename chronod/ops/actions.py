"""Operator actions: ``chronod trigger/pause/resume`` and the web page's buttons.

Each is refused (:class:`JobNotLoaded`) on a store no scheduler has loaded the job on, unless
forced: see :func:`require_loaded`.
"""

from __future__ import annotations

from dataclasses import dataclass

from chronod.config import JobConfig
from chronod.errors import JobNotLoaded, StoreMissing
from chronod.ops.status import ever_loaded
from chronod.store.base import JobState, RunRecord, Store


@dataclass(frozen=True, kw_only=True)
class PauseChange:
    job: str
    changed: bool  # False when the job already was in the requested state
    state: JobState


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
