"""The workers' side of the PostgreSQL store: the statements of the SQL stores' queue
(:class:`chronod.store.sqlite.queue.Queue`: manual runs, claims and their attempts, quarantine)
in PostgreSQL's dialect. Each method of :data:`POSTGRES_QUEUE` runs inside the caller's
transaction (:class:`~chronod.store.postgres.connection.Tx`).

A queued row of ``runs`` *is* the queue message. A claim takes it with ``FOR UPDATE SKIP
LOCKED``: workers claiming at the same instant each lock a different ready run instead of
queueing behind one another's row lock (and then failing to serialize).
"""

from __future__ import annotations

from dataclasses import dataclass

from chronod.store._common import MalformedRecord
from chronod.store.postgres.connection import Tx
from chronod.store.postgres.rows import INSERT_HISTORY, RUN_COLUMNS, TRIM_HISTORY
from chronod.store.sqlite.chains import Chains, chain_sql
from chronod.store.sqlite.outbox import POSTGRES_OUTBOX
from chronod.store.sqlite.queue import Queue, QueueSQL, QueueTx
from chronod.store.sqlite.rows import READ, Row

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
_NEXT_READY_IN_QUEUE = """SELECT min(not_before) AS at FROM runs
    WHERE state = 'queued' AND queue = %s AND not_before > %s"""
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
_REMEMBER_FINISH = """INSERT INTO finishes (token, run_id, status, result, expires_at)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (token) DO UPDATE SET run_id = excluded.run_id, status = excluded.status,
        result = excluded.result, expires_at = excluded.expires_at"""
_RECALL_FINISH = """SELECT status, result FROM finishes
    WHERE token = %s AND run_id = %s AND expires_at > %s"""
_FORGET_FINISHES = "DELETE FROM finishes WHERE expires_at <= %s"


_RUN_BY_SEQ = f"SELECT {RUN_COLUMNS} FROM runs WHERE seq = %s"


class NeedsQuarantine(Exception):
    """A claim's READ COMMITTED transaction met a malformed run (``seq``): it rolls back, and the
    run is quarantined in a SERIALIZABLE transaction of its own (:meth:`PostgresQueue.quarantine`),
    since ending a run releases its job's waiting run, which dispatch decides on."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq


@dataclass(frozen=True)
class PostgresQueue(Queue):
    """The SQL stores' queue; malformed runs met at READ COMMITTED are quarantined apart."""

    def well_formed(self, tx: QueueTx, row: Row) -> bool:
        if isinstance(tx, Tx) and not tx.serializable:
            try:
                READ.live(row)
            except MalformedRecord:
                raise NeedsQuarantine(int(row["seq"])) from None
            return True
        return super().well_formed(tx, row)

    def quarantine(self, tx: Tx, seq: int) -> None:
        """Quarantine the live run ``seq`` if it is still there and still malformed."""
        row = tx.one(_RUN_BY_SEQ, (seq,))
        if row is not None:
            self.well_formed(tx, row)


POSTGRES_QUEUE = PostgresQueue(
    QueueSQL(
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
    ),
    POSTGRES_OUTBOX,
    Chains(
        chain_sql(
            "%s",
            insert_run=_INSERT_RUN,
            insert_history=INSERT_HISTORY,
            trim_history=TRIM_HISTORY,
        )
    ),
)
