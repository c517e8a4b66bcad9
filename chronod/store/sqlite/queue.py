"""The workers' side of the SQL stores: manual runs, claims and their attempts (heartbeat,
finish, hand back, reap), and quarantining the malformed runs a claim meets. Each method of
:class:`Queue` runs inside the caller's write transaction (here
:class:`~chronod.store.sqlite.connection.Tx`); the rules are written once, over the statements of
one SQL dialect (:class:`QueueSQL`): SQLite's below, PostgreSQL's in
:mod:`chronod.store.postgres.queue`.

A queued row of ``runs`` *is* the queue message: a claim is one ordered seek per queue in the
ready index (``schema.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from chronod.instants import from_micros, to_micros
from chronod.store._common import (
    MAX_MICROS,
    MalformedRecord,
    manual_run_id,
    micros,
    output_tail,
    shown,
)
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
from chronod.store.sqlite.chains import Chains, chain_sql
from chronod.store.sqlite.outbox import SQLITE_OUTBOX, Outbox, SQLTx
from chronod.store.sqlite.rows import (
    INSERT_HISTORY,
    READ,
    RUN_COLUMNS,
    TRIM_HISTORY,
    Row,
    history_entry,
    result_entry,
)

_INSERT_RUN = """INSERT INTO runs (run_id, job, slot, manual, state, queue, digest, epoch, attempt,
        max_attempts, created_at, not_before)
    VALUES (:run_id, :job, :slot, :manual, :state, :queue, :digest, :epoch, :attempt,
        :max_attempts, :created_at, :not_before)"""
_RUN_ID_TAKEN = """SELECT 1 FROM runs WHERE run_id = :run_id
    UNION ALL SELECT 1 FROM history WHERE run_id = :run_id LIMIT 1"""
_HAS_ACTIVE = "SELECT 1 FROM runs WHERE job = ? LIMIT 1"
_RUN_BY_TOKEN = f"SELECT {RUN_COLUMNS} FROM runs WHERE token = ? AND state = 'running'"
_RUN_WITH_TOKEN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ? AND token = ?"
# The oldest ready run of one queue: an ordered seek in runs_ready. claim() asks each of its queues
# and takes the oldest answer, rather than `queue IN (...)`, which would sort every ready run.
_READY_IN_QUEUE = f"""SELECT {RUN_COLUMNS} FROM runs
    WHERE state = 'queued' AND queue = ? AND not_before <= ?
    ORDER BY not_before, seq LIMIT 1"""
# Live runs that decoding would refuse, for the sweep: values of the wrong type (SQLite keeps text
# written into an INTEGER column), instants out of range, and running runs without a token or
# attempt lease (never reaped). The Python decoding is the authority; this only finds candidates
# without reading every row into Python.
_MALFORMED_RUNS = f"""SELECT {RUN_COLUMNS} FROM runs WHERE
    typeof(run_id) != 'text' OR typeof(job) != 'text' OR typeof(queue) != 'text'
    OR typeof(digest) != 'text' OR state NOT IN ('queued', 'waiting', 'running')
    OR typeof(slot) != 'integer' OR slot NOT BETWEEN 0 AND :max
    OR typeof(created_at) != 'integer' OR created_at NOT BETWEEN 0 AND :max
    OR typeof(not_before) != 'integer' OR not_before NOT BETWEEN 0 AND :max
    OR typeof(manual) != 'integer' OR manual NOT IN (0, 1)
    OR typeof(epoch) != 'integer' OR epoch < 0
    OR typeof(attempt) != 'integer' OR attempt < 0
    OR typeof(max_attempts) != 'integer' OR max_attempts < 0
    OR (started_at IS NOT NULL
        AND (typeof(started_at) != 'integer' OR started_at NOT BETWEEN 0 AND :max))
    OR (worker IS NOT NULL AND typeof(worker) != 'text')
    OR (state = 'running' AND (typeof(token) != 'text' OR typeof(lease_expires_at) != 'integer'))
    LIMIT 1000"""
# When a blocking claim found nothing, the next instants at which something could become ready
# without another process committing: a delayed run's not_before, or an attempt lease to reap.
_NEXT_READY_IN_QUEUE = """SELECT min(not_before) AS at FROM runs
    WHERE state = 'queued' AND queue = ? AND not_before > ?"""
_NEXT_LEASE_EXPIRY = "SELECT min(lease_expires_at) AS at FROM runs WHERE state = 'running'"
_START_ATTEMPT = """UPDATE runs SET state = 'running', attempt = attempt + 1, token = ?, worker = ?,
    started_at = ?, lease_expires_at = ? WHERE seq = ?"""
_EXTEND_ATTEMPT = """UPDATE runs SET lease_expires_at = ?
    WHERE run_id = ? AND token = ? AND state = 'running'"""
_REQUEUE = """UPDATE runs SET state = 'queued', not_before = ?, token = NULL, worker = NULL,
    started_at = NULL, lease_expires_at = NULL WHERE seq = ?"""
_HAND_BACK = """UPDATE runs SET state = 'queued', attempt = attempt - 1, token = NULL,
    worker = NULL, started_at = NULL, lease_expires_at = NULL
    WHERE run_id = ? AND token = ? AND state = 'running'"""
_EXPIRED_ATTEMPTS = f"""SELECT {RUN_COLUMNS} FROM runs
    WHERE state = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at, seq"""
_DELETE_RUN = "DELETE FROM runs WHERE seq = ?"
# The job's oldest waiting run becomes queued; its not_before (slot or trigger time) is already
# past, so it is ready at once and keeps its place among older ready runs.
_PROMOTE_WAITING = """UPDATE runs SET state = 'queued' WHERE seq =
    (SELECT seq FROM runs WHERE job = ? AND state = 'waiting' ORDER BY created_at, seq LIMIT 1)"""
_SET_OUTCOME = """INSERT INTO jobs (name, last_outcome, last_outcome_at, last_success_at)
    VALUES (:job, :outcome, :at, :success_at)
    ON CONFLICT (name) DO UPDATE SET
        last_outcome = excluded.last_outcome,
        last_outcome_at = excluded.last_outcome_at,
        last_success_at = coalesce(excluded.last_success_at, jobs.last_success_at)"""
_FINISHED_WITH_TOKEN = """SELECT status, outcome, exit_code, output, error FROM history
    WHERE run_id = ? AND token = ? AND status IS NOT NULL ORDER BY seq DESC LIMIT 1"""
_REMEMBER_FINISH = """INSERT INTO finishes (token, run_id, status, result, expires_at)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (token) DO UPDATE SET run_id = excluded.run_id, status = excluded.status,
        result = excluded.result, expires_at = excluded.expires_at"""
_RECALL_FINISH = """SELECT status, result FROM finishes
    WHERE token = ? AND run_id = ? AND expires_at > ?"""
_FORGET_FINISHES = "DELETE FROM finishes WHERE expires_at <= ?"
# A finish's answer is remembered this long for a client's retry (as Redis's token: hash).
FINISH_MEMORY = timedelta(days=1)


QueueTx = SQLTx  # what the queue's methods need of a transaction


@dataclass(frozen=True, kw_only=True)
class QueueSQL:
    """The statements of :class:`Queue` in one SQL dialect (positional parameters in the order
    SQLite's statements take them; named ones by the same names)."""

    insert_run: str
    run_id_taken: str
    has_active: str
    run_by_token: str
    run_with_token: str
    ready_in_queue: str  # the oldest ready run of one queue (queue, now)
    malformed_runs: str
    next_ready_in_queue: str  # ... AS at
    next_lease_expiry: str  # ... AS at
    start_attempt: str
    extend_attempt: str
    requeue: str
    hand_back: str
    expired_attempts: str
    delete_run: str
    promote_waiting: str
    set_outcome: str
    finished_with_token: str
    remember_finish: str  # (token, run_id, status, result digest, expires_at)
    recall_finish: str  # (token, run_id, now) → status, result
    forget_finishes: str  # (now,)
    insert_history: str
    trim_history: str


SQLITE_SQL = QueueSQL(
    insert_run=_INSERT_RUN,
    run_id_taken=_RUN_ID_TAKEN,
    has_active=_HAS_ACTIVE,
    run_by_token=_RUN_BY_TOKEN,
    run_with_token=_RUN_WITH_TOKEN,
    ready_in_queue=_READY_IN_QUEUE,
    malformed_runs=_MALFORMED_RUNS,
    next_ready_in_queue=_NEXT_READY_IN_QUEUE,
    next_lease_expiry=_NEXT_LEASE_EXPIRY,
    start_attempt=_START_ATTEMPT,
    extend_attempt=_EXTEND_ATTEMPT,
    requeue=_REQUEUE,
    hand_back=_HAND_BACK,
    expired_attempts=_EXPIRED_ATTEMPTS,
    delete_run=_DELETE_RUN,
    promote_waiting=_PROMOTE_WAITING,
    set_outcome=_SET_OUTCOME,
    finished_with_token=_FINISHED_WITH_TOKEN,
    remember_finish=_REMEMBER_FINISH,
    recall_finish=_RECALL_FINISH,
    forget_finishes=_FORGET_FINISHES,
    insert_history=INSERT_HISTORY,
    trim_history=TRIM_HISTORY,
)


@dataclass(frozen=True)
class Queue:
    """The queue's rules over the statements ``sql``; run ends and claims append their events to
    ``outbox``, and run ends decide the runs of their ``chains``, in the same transaction."""

    sql: QueueSQL
    outbox: Outbox
    chains: Chains

    def enqueue_manual(
        self, tx: QueueTx, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        created = tx.now
        # Two triggers in the same microsecond: the later one takes the next free microsecond, so
        # the id keeps its documented NAME@<instant>~manual form and stays unique.
        while self._run_id_taken(tx, manual_run_id(job, created)):
            created += 1
        active = tx.conn.execute(self.sql.has_active, (job,)).fetchone() is not None
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
        tx.conn.execute(self.sql.insert_run, run)
        return READ.live(run)

    def _run_id_taken(self, tx: QueueTx, run_id: str) -> bool:
        return tx.conn.execute(self.sql.run_id_taken, {"run_id": run_id}).fetchone() is not None

    # -- claims -----------------------------------------------------------------------------------

    def repeated_claim(self, tx: QueueTx, token: str) -> Claim | None:
        """The claim ``token`` already made, if its attempt is still running (a retried claim)."""
        repeated = tx.conn.execute(self.sql.run_by_token, (token,)).fetchone()
        if repeated is not None and self.well_formed(tx, repeated):
            return _claim_of(dict(repeated))
        return None

    def claim_oldest(
        self, tx: QueueTx, queues: Sequence[str], worker: str, token: str, ttl: timedelta
    ) -> Claim | None:
        """Start an attempt of the oldest ready run of ``queues``, if there is one."""
        run = self._oldest_ready(tx, queues)
        if run is None:
            return None
        expires_at = tx.now + micros(ttl)
        tx.conn.execute(self.sql.start_attempt, (token, worker, tx.now, expires_at, run["seq"]))
        started = {
            **run,
            "state": RunState.RUNNING.value,
            "attempt": run["attempt"] + 1,
            "token": token,
            "worker": worker,
            "started_at": tx.now,
            "lease_expires_at": expires_at,
        }
        self.outbox.append(tx, started, None, started=True)  # a ping's /start, with the claim
        return _claim_of(started)

    def _oldest_ready(self, tx: QueueTx, queues: Sequence[str]) -> dict[str, Any] | None:
        """The oldest ready run of ``queues``; malformed ones met on the way are quarantined."""
        while True:
            ready = [
                dict(row)
                for queue in queues
                for row in tx.conn.execute(self.sql.ready_in_queue, (queue, tx.now))
            ]
            usable = [run for run in ready if self.well_formed(tx, run)]
            if usable:
                return min(usable, key=lambda r: (r["not_before"], r["seq"]))
            if not ready:
                return None

    def next_wake(self, tx: QueueTx, queues: Sequence[str]) -> int | None:
        """When something may become claimable without another commit (µs), if ever."""
        found = [
            tx.conn.execute(self.sql.next_ready_in_queue, (q, tx.now)).fetchone() for q in queues
        ]
        found.append(tx.conn.execute(self.sql.next_lease_expiry).fetchone())
        candidates = [row["at"] for row in found if row is not None]
        present = [c for c in candidates if type(c) is int]  # a malformed row's value is skipped
        return min(present) if present else None

    # -- attempts ---------------------------------------------------------------------------------

    def heartbeat(self, tx: QueueTx, run_id: str, token: str, ttl: timedelta) -> bool:
        updated = tx.conn.execute(self.sql.extend_attempt, (tx.now + micros(ttl), run_id, token))
        return bool(updated.rowcount == 1)

    def finish(self, tx: QueueTx, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        row = tx.conn.execute(self.sql.run_with_token, (run_id, token)).fetchone()
        if row is None or row["state"] != RunState.RUNNING.value:
            return self._repeated_finish(tx, run_id, token, result)
        run = dict(row)
        retryable = result.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
        attempts_left = run["attempt"] < run["max_attempts"]
        retry_at = result.retry_at if retryable and attempts_left else None
        status = FinishStatus.ACCEPTED if retry_at is None else FinishStatus.RETRY
        entry = result_entry(run, result, tx.now, token=token, status=status.value)
        if retry_at is None:
            self._end_run(tx, run, entry)
        else:
            tx.conn.execute(self.sql.insert_history, entry)
            tx.conn.execute(self.sql.requeue, (to_micros(retry_at), run["seq"]))
            tx.conn.execute(self.sql.trim_history, {"job": run["job"], "keep": tx.keep})
        # The answer outlives the history entry (trimmed by newer ones): a client's retry of this
        # finish gets it for a day, as on Redis.
        tx.conn.execute(self.sql.forget_finishes, (tx.now,))
        expires = tx.now + micros(FINISH_MEMORY)
        digest = _result_digest(result)
        tx.conn.execute(self.sql.remember_finish, (token, run_id, status.value, digest, expires))
        return status

    def _repeated_finish(
        self, tx: QueueTx, run_id: str, token: str, result: AttemptResult
    ) -> FinishStatus:
        """The answer to a finish whose token is not running: a repeat or a stale result.

        A client retry (this token already recorded this very result) gets the first answer again;
        anything else (a reclaimed attempt's late result, a different result) is STALE.
        """
        known = tx.conn.execute(self.sql.recall_finish, (token, run_id, tx.now)).fetchone()
        if known is not None:
            same = known["result"] == _result_digest(result)
            return FinishStatus(known["status"]) if same else FinishStatus.STALE
        # Finished before the finishes table existed (an upgraded store): its history entry.
        done = tx.conn.execute(self.sql.finished_with_token, (run_id, token)).fetchone()
        same = done is not None and (
            done["outcome"],
            done["exit_code"],
            done["output"],
            done["error"],
        ) == (result.outcome.value, result.exit_code, output_tail(result.output), result.error)
        return FinishStatus(done["status"]) if same else FinishStatus.STALE

    def hand_back(self, tx: QueueTx, run_id: str, token: str) -> bool:
        return bool(tx.conn.execute(self.sql.hand_back, (run_id, token)).rowcount == 1)

    def reap(self, tx: QueueTx) -> list[str]:
        """Reclaim the runs whose attempt lease expired; their ids."""
        reaped: list[str] = []
        for row in tx.conn.execute(self.sql.expired_attempts, (tx.now,)).fetchall():
            run = dict(row)
            if not self.well_formed(tx, run):
                continue
            if run["attempt"] < run["max_attempts"]:
                tx.conn.execute(self.sql.requeue, (tx.now, run["seq"]))
            else:
                self._end_run(tx, run, history_entry(run, Outcome.LOST, tx.now, token=None))
            reaped.append(run["run_id"])
        return reaped

    def _end_run(self, tx: QueueTx, run: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
        """Terminal outcome: history, job outcome fields, leave the live set, release a waiter,
        start the followers."""
        self.end_history(tx, run["job"], entry)
        tx.conn.execute(self.sql.delete_run, (run["seq"],))
        tx.conn.execute(self.sql.promote_waiting, (run["job"],))
        # Last, as on Redis: a job that follows itself no longer sees this run as active.
        self.chains.follow(tx, entry)  # the downstream runs, in the end's transaction ("Chains")

    def end_history(self, tx: QueueTx, job: str, entry: Mapping[str, Any]) -> None:
        """A run's end in the job's history and outcome fields (trimmed to ``history`` entries)."""
        outcome = Outcome(entry["outcome"])
        previous = self.outbox.previous_outcome(tx, job)
        tx.conn.execute(self.sql.insert_history, entry)
        self.outbox.append(tx, entry, previous)  # with the outcome, in its transaction (the outbox)
        # An upsert: a manual run of a job the leader never loaded still leaves its outcome, in a
        # state with an empty fingerprint (as set_paused creates), which a later load treats as new.
        tx.conn.execute(
            self.sql.set_outcome,
            {
                "job": job,
                "outcome": outcome.value,
                "at": tx.now,
                "success_at": tx.now if outcome is Outcome.SUCCEEDED else None,
            },
        )
        tx.conn.execute(self.sql.trim_history, {"job": job, "keep": tx.keep})

    # -- malformed --------------------------------------------------------------------------------

    def well_formed(self, tx: QueueTx, row: Row) -> bool:
        """Whether the live run ``row`` can be read; if not, it is quarantined."""
        try:
            READ.live(row)
        except MalformedRecord as exc:
            self._quarantine(tx, row, str(exc))
            return False
        return True

    def sweep(self, tx: QueueTx) -> None:
        """Quarantine malformed live runs that claim would never meet (never ready, never reaped):
        each would count as its job's active run forever."""
        for row in tx.conn.execute(self.sql.malformed_runs, {"max": MAX_MICROS}).fetchall():
            self.well_formed(tx, row)

    def _quarantine(self, tx: QueueTx, row: Row, problem: str) -> None:
        """End a malformed live run as ``quarantined`` ("Malformed records" in the contract)."""
        run = dict(row)
        job = run.get("job")
        entry = history_entry(run, Outcome.QUARANTINED, tx.now, error=f"quarantined: {problem}")
        if isinstance(job, str):
            self._end_run(tx, run, entry)
        else:  # no job to update or release: keep the entry, under a name history can show
            entry["job"] = shown(job)
            tx.conn.execute(self.sql.insert_history, entry)
            tx.conn.execute(self.sql.delete_run, (run["seq"],))
        run_id = run.get("run_id")
        tx.quarantined.append(
            Quarantined(
                run_id=run_id if isinstance(run_id, str) else shown(run_id),
                job=job if isinstance(job, str) else shown(job),
                problem=problem,
            )
        )


def _claim_of(run: Mapping[str, Any]) -> Claim:
    return Claim(
        run=READ.live(run),
        token=run["token"],
        attempt=int(run["attempt"]),
        lease_expires_at=from_micros(run["lease_expires_at"]),
    )


# The SQLite store's queue, and its methods as this module's functions.
SQLITE_CHAINS = Chains(
    chain_sql(
        "?",
        insert_run=_INSERT_RUN,
        insert_history=INSERT_HISTORY,
        trim_history=TRIM_HISTORY,
    )
)
SQLITE_QUEUE = Queue(SQLITE_SQL, SQLITE_OUTBOX, SQLITE_CHAINS)
enqueue_manual = SQLITE_QUEUE.enqueue_manual
repeated_claim = SQLITE_QUEUE.repeated_claim
claim_oldest = SQLITE_QUEUE.claim_oldest
next_wake = SQLITE_QUEUE.next_wake
heartbeat = SQLITE_QUEUE.heartbeat
finish = SQLITE_QUEUE.finish
hand_back = SQLITE_QUEUE.hand_back
reap = SQLITE_QUEUE.reap
well_formed = SQLITE_QUEUE.well_formed
sweep = SQLITE_QUEUE.sweep
end_history = SQLITE_QUEUE.end_history


def _result_digest(result: AttemptResult) -> str:
    """What a repeated finish must carry to be a retry of the first: outcome, exit code, output
    tail and error."""
    shown = [result.outcome.value, result.exit_code, output_tail(result.output), result.error]
    return hashlib.sha1(json.dumps(shown).encode()).hexdigest()
