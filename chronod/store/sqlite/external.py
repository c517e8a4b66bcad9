"""The SQL stores' side of runs executed by another system (``Store.begin_external`` and
``end_external``).

Each method runs inside the caller's write transaction (SQLite's ``BEGIN IMMEDIATE``,
PostgreSQL's SERIALIZABLE one), so its read-check-write is atomic against every other process.
The statements are plain SQL both databases take; only the parameter mark differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from chronod.instants import to_micros
from chronod.store._common import micros
from chronod.store.base import EXTERNAL_TTL, AttemptResult, ExternalRun
from chronod.store.sqlite.queue import SQLITE_QUEUE, Queue, QueueTx
from chronod.store.sqlite.rows import result_entry

_FIND = "SELECT executor, started_at, ended FROM external WHERE run_id = ? AND try_no = ?"
_INSERT = """INSERT INTO external (run_id, try_no, executor, started_at, ended, expires_at)
    VALUES (?, ?, ?, ?, 0, ?)"""
_EXPIRE = "DELETE FROM external WHERE expires_at <= ?"
_ENDED = "UPDATE external SET ended = 1 WHERE run_id = ? AND try_no = ?"


@dataclass(frozen=True)
class External:
    """External runs with the parameter ``mark`` of one dialect; a run's end is written by
    ``queue`` (history, outcome fields and the outbox, as any run's end)."""

    mark: str
    queue: Queue

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.mark)

    def begin(self, tx: QueueTx, run: ExternalRun) -> bool:
        tx.conn.execute(self._sql(_EXPIRE), (tx.now,))
        row = tx.conn.execute(self._sql(_FIND), (run.run_id, run.try_no)).fetchone()
        if row is not None:
            return bool(row["executor"] == run.executor)
        expires = tx.now + micros(EXTERNAL_TTL)
        values = (run.run_id, run.try_no, run.executor, tx.now, expires)
        tx.conn.execute(self._sql(_INSERT), values)
        return True

    def end(self, tx: QueueTx, run: ExternalRun, result: AttemptResult) -> bool:
        row = tx.conn.execute(self._sql(_FIND), (run.run_id, run.try_no)).fetchone()
        if row is None or row["executor"] != run.executor:
            return False
        if row["ended"]:
            return True
        tx.conn.execute(self._sql(_ENDED), (run.run_id, run.try_no))
        started = int(row["started_at"])
        record = {
            "run_id": run.run_id,
            "job": run.job,
            "slot": to_micros(run.slot),
            "manual": 0,
            "queue": run.queue,
            "digest": "",
            "epoch": run.epoch,
            "attempt": run.attempt,
            "max_attempts": run.attempt,
            "created_at": started,
            "started_at": started,
            "worker": run.executor,
        }
        entry = result_entry(record, result, tx.now)
        self.queue.end_history(tx, run.job, entry)
        self.queue.chains.follow(tx, entry)  # the followers, in the same transaction
        return True


SQLITE_EXTERNAL = External("?", SQLITE_QUEUE)
