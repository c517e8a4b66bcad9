"""The workers' side of the PostgreSQL store: manual runs, claims and their attempts (heartbeat,
finish, hand back, reap), and quarantining the malformed runs a claim meets. Each function runs
inside the caller's transaction (:class:`~chronod.store.postgres.connection.Tx`); the rules are
the SQLite store's (``chronod/store/sqlite/queue.py``), in PostgreSQL's statements.

A queued row of ``runs`` *is* the queue message. A claim takes it with ``FOR UPDATE SKIP
LOCKED``: workers claiming at the same instant each lock a different ready run instead of
queueing behind one another's row lock (and then failing to serialize).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from chronod.instants import from_micros, to_micros
from chronod.store._common import MAX_MICROS, MalformedRecord, manual_run_id, micros, output_tail
from chronod.store._common import shown as shown_value
from chronod.store.base import (
    AttemptResult,
    Claim,
    FinishStatus,
    Outcome,
    Overlap,
    Quarantined,
    RunRecord,
    RunState,
)
from chronod.store.postgres.connection import Tx
from chronod.store.postgres.rows import INSERT_HISTORY, RUN_COLUMNS, TRIM_HISTORY
from chronod.store.sqlite.rows import READ, history_entry

_INSERT_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest, epoch, attempt,
        max_attempts, created_at, not_before)
    VALUES (%(run_id)s, %(job)s, %(slot)s, %(manual)s, %(state)s, %(queue)s, %(digest)s,
        %(epoch)s, %(attempt)s, %(max_attempts)s, %(created_at)s, %(not_before)s)"""
_RUN_ID_TAKEN = """SELECT 1 AS taken FROM runs WHERE run_id = %(run_id)s
    UNION ALL SELECT 1 FROM history WHERE run_id = %(run_id)s LIMIT 1"""
_HAS_ACTIVE = "SELECT 1 AS active FROM runs WHERE job = %s LIMIT 1"
_RUN_BY_TOKEN = f"SELECT {RUN_COLUMNS} FROM runs WHERE token = %s AND state = 'running'"
_RUN_WITH_TOKEN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s AND token = %s"
_READY_IN_QUEUE = f"""SELECT {RUN_COLUMNS} FROM runs
    WHERE state = 'queued' AND queue = %s AND not_before <= %s
    ORDER BY not_before, seq LIMIT 1 FOR UPDATE SKIP LOCKED"""
# Live runs that decoding would refuse (the columns' types already hold): instants out of range,
# negative counters, running runs without a token or attempt lease (never reaped).
_MALFORMED_RUNS = f"""SELECT {RUN_COLUMNS} FROM runs WHERE
    slot NOT BETWEEN 0 AND %(max)s OR created_at NOT BETWEEN 0 AND %(max)s
    OR not_before NOT BETWEEN 0 AND %(max)s OR manual NOT IN (0, 1)
    OR epoch < 0 OR attempt < 0 OR max_attempts < 0
    OR (started_at IS NOT NULL AND started_at NOT BETWEEN 0 AND %(max)s)
    OR (state = 'running' AND (token IS NULL OR lease_expires_at IS NULL))
    LIMIT 1000"""
_NEXT_READY = """SELECT min(not_before) AS at FROM runs
    WHERE state = 'queued' AND queue = ANY(%s) AND not_before > %s"""
_NEXT_LEASE_EXPIRY = "SELECT min(lease_expires_at) AS at FROM runs WHERE state = 'running'"
_START_ATTEMPT = """UPDATE runs SET state = 'running', attempt = attempt + 1, token = %s,
    worker = %s, started_at = %s, lease_expires_at = %s WHERE seq = %s"""
_EXTEND_ATTEMPT = """UPDATE runs SET lease_expires_at = %s
    WHERE run_id = %s AND token = %s AND state = 'running'"""
_REQUEUE = """UPDATE runs SET state = 'queued', not_before = %s, token = NULL, worker = NULL,
    started_at = NULL, lease_expires_at = NULL WHERE seq = %s"""
_HAND_BACK = """UPDATE runs SET state = 'queued', attempt = attempt - 1, token = NULL,
    worker = NULL, started_at = NULL, lease_expires_at = NULL
    WHERE run_id = %s AND token = %s AND state = 'running'"""
_EXPIRED_ATTEMPTS = f"""SELECT {RUN_COLUMNS} FROM runs
    WHERE state = 'running' AND lease_expires_at <= %s ORDER BY lease_expires_at, seq"""
_DELETE_RUN = "DELETE FROM runs WHERE seq = %s"
_PROMOTE_WAITING = """UPDATE runs SET state = 'queued' WHERE seq =
    (SELECT seq FROM runs WHERE job = %s AND state = 'waiting' ORDER BY created_at, seq LIMIT 1)"""
_SET_OUTCOME = """INSERT INTO jobs (name, last_outcome, last_outcome_at, last_success_at)
    VALUES (%(job)s, %(outcome)s, %(at)s, %(success_at)s)
    ON CONFLICT (name) DO UPDATE SET
        last_outcome = excluded.last_outcome,
        last_outcome_at = excluded.last_outcome_at,
        last_success_at = coalesce(excluded.last_success_at, jobs.last_success_at)"""
_FINISHED_WITH_TOKEN = """SELECT status, outcome, exit_code, output, error FROM history
    WHERE run_id = %s AND token = %s AND status IS NOT NULL ORDER BY seq DESC LIMIT 1"""


def enqueue_manual(
    tx: Tx, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
) -> RunRecord:
    created = tx.now
    # Two triggers in the same microsecond: the later one takes the next free microsecond, so
    # the id keeps its documented NAME@<instant>~manual form and stays unique.
    while tx.one(_RUN_ID_TAKEN, {"run_id": manual_run_id(job, created)}) is not None:
        created += 1
    active = tx.one(_HAS_ACTIVE, (job,)) is not None
    state = RunState.WAITING if active and overlap != "allow" else RunState.QUEUED
    run = {
        "run_id": manual_run_id(job, created),
        "job": job,
        "slot": created,
        "manual": 1,
        "state": state.value,
        "queue": queue,
        "digest": digest,
        "epoch": 0,
        "attempt": 0,
        "max_attempts": max_attempts,
        "created_at": created,
        "not_before": created,
        "started_at": None,
        "worker": None,
    }
    tx.run(_INSERT_RUN, run)
    return READ.live(run)


# -- claims ----------------------------------------------------------------------------------------


def repeated_claim(tx: Tx, token: str) -> Claim | None:
    """The claim ``token`` already made, if its attempt is still running (a retried claim)."""
    repeated = tx.one(_RUN_BY_TOKEN, (token,))
    if repeated is not None and well_formed(tx, repeated):
        return _claim_of(repeated)
    return None


def claim_oldest(
    tx: Tx, queues: Sequence[str], worker: str, token: str, ttl: timedelta
) -> Claim | None:
    """Start an attempt of the oldest ready run of ``queues``, if there is one."""
    run = _oldest_ready(tx, queues)
    if run is None:
        return None
    expires_at = tx.now + micros(ttl)
    tx.run(_START_ATTEMPT, (token, worker, tx.now, expires_at, run["seq"]))
    started = {
        **run,
        "state": RunState.RUNNING.value,
        "attempt": run["attempt"] + 1,
        "token": token,
        "worker": worker,
        "started_at": tx.now,
        "lease_expires_at": expires_at,
    }
    return _claim_of(started)


def _oldest_ready(tx: Tx, queues: Sequence[str]) -> dict[str, Any] | None:
    """The oldest ready run of ``queues``; malformed ones met on the way are quarantined."""
    while True:
        ready = [row for queue in queues for row in tx.all(_READY_IN_QUEUE, (queue, tx.now))]
        usable = [run for run in ready if well_formed(tx, run)]
        if usable:
            return min(usable, key=lambda r: (r["not_before"], r["seq"]))
        if not ready:
            return None


def next_wake(tx: Tx, queues: Sequence[str]) -> int | None:
    """When something may become claimable without another commit (µs), if ever."""
    found = [tx.one(_NEXT_READY, (list(queues), tx.now)), tx.one(_NEXT_LEASE_EXPIRY)]
    present = [int(row["at"]) for row in found if row is not None and row["at"] is not None]
    return min(present) if present else None


def _claim_of(run: Mapping[str, Any]) -> Claim:
    return Claim(
        run=READ.live(run),
        token=run["token"],
        attempt=int(run["attempt"]),
        lease_expires_at=from_micros(run["lease_expires_at"]),
    )


# -- attempts --------------------------------------------------------------------------------------


def heartbeat(tx: Tx, run_id: str, token: str, ttl: timedelta) -> bool:
    return tx.run(_EXTEND_ATTEMPT, (tx.now + micros(ttl), run_id, token)) == 1


def finish(tx: Tx, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
    run = tx.one(_RUN_WITH_TOKEN, (run_id, token))
    if run is None or run["state"] != RunState.RUNNING.value:
        return _repeated_finish(tx, run_id, token, result)
    retryable = result.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
    attempts_left = run["attempt"] < run["max_attempts"]
    retry_at = result.retry_at if retryable and attempts_left else None
    status = FinishStatus.ACCEPTED if retry_at is None else FinishStatus.RETRY
    entry = history_entry(
        run,
        result.outcome,
        tx.now,
        exit_code=result.exit_code,
        output=output_tail(result.output),
        error=result.error,
        token=token,
        status=status.value,
    )
    if retry_at is None:
        _end_run(tx, run, entry)
    else:
        tx.run(INSERT_HISTORY, entry)
        tx.run(_REQUEUE, (to_micros(retry_at), run["seq"]))
        tx.run(TRIM_HISTORY, {"job": run["job"], "keep": tx.keep})
    return status


def _repeated_finish(tx: Tx, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
    """A repeat of an accepted finish gets its first answer; anything else is STALE."""
    done = tx.one(_FINISHED_WITH_TOKEN, (run_id, token))
    same = done is not None and (
        done["outcome"],
        done["exit_code"],
        done["output"],
        done["error"],
    ) == (result.outcome.value, result.exit_code, output_tail(result.output), result.error)
    return FinishStatus(done["status"]) if same and done is not None else FinishStatus.STALE


def hand_back(tx: Tx, run_id: str, token: str) -> bool:
    return tx.run(_HAND_BACK, (run_id, token)) == 1


def reap(tx: Tx) -> list[str]:
    """Reclaim the runs whose attempt lease expired; their ids."""
    reaped: list[str] = []
    for run in tx.all(_EXPIRED_ATTEMPTS, (tx.now,)):
        if not well_formed(tx, run):
            continue
        if run["attempt"] < run["max_attempts"]:
            tx.run(_REQUEUE, (tx.now, run["seq"]))
        else:
            _end_run(tx, run, history_entry(run, Outcome.LOST, tx.now, token=None))
        reaped.append(run["run_id"])
    return reaped


def _end_run(tx: Tx, run: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
    """Terminal outcome: history, job outcome fields, leave the live set, release a waiter."""
    outcome = Outcome(entry["outcome"])
    tx.run(INSERT_HISTORY, entry)
    tx.run(
        _SET_OUTCOME,
        {
            "job": run["job"],
            "outcome": outcome.value,
            "at": tx.now,
            "success_at": tx.now if outcome is Outcome.SUCCEEDED else None,
        },
    )
    tx.run(_DELETE_RUN, (run["seq"],))
    tx.run(_PROMOTE_WAITING, (run["job"],))
    tx.run(TRIM_HISTORY, {"job": run["job"], "keep": tx.keep})


# -- malformed runs --------------------------------------------------------------------------------


def well_formed(tx: Tx, row: Mapping[str, Any]) -> bool:
    """Whether the live run ``row`` can be read; if not, it is quarantined."""
    try:
        READ.live(row)
    except MalformedRecord as exc:
        _quarantine(tx, row, str(exc))
        return False
    return True


def sweep(tx: Tx) -> None:
    """Quarantine malformed live runs that claim would never meet (never ready, never reaped)."""
    for row in tx.all(_MALFORMED_RUNS, {"max": MAX_MICROS}):
        well_formed(tx, row)


def _quarantine(tx: Tx, row: Mapping[str, Any], problem: str) -> None:
    """End a malformed live run as ``quarantined`` ("Malformed records" in the contract)."""
    entry = history_entry(row, Outcome.QUARANTINED, tx.now, error=f"quarantined: {problem}")
    _end_run(tx, row, entry)
    tx.quarantined.append(
        Quarantined(run_id=str(row["run_id"]), job=shown_value(row["job"]), problem=problem)
    )
