"""The SQLite side of runs executed by another system (``Store.begin_external``/``end_external``).

Each function runs inside the caller's ``BEGIN IMMEDIATE`` transaction (:class:`Tx`), so its
read-check-write is atomic against every other process on the file.
"""

from __future__ import annotations

from chronod.instants import to_micros
from chronod.store._common import micros
from chronod.store.base import EXTERNAL_TTL, AttemptResult, ExternalRun
from chronod.store.sqlite.connection import Tx
from chronod.store.sqlite.queue import end_history
from chronod.store.sqlite.rows import result_entry

_FIND = "SELECT executor, started_at, ended FROM external WHERE run_id = ? AND try_no = ?"
_INSERT = """INSERT INTO external (run_id, try_no, executor, started_at, ended, expires_at)
    VALUES (?, ?, ?, ?, 0, ?)"""
_EXPIRE = "DELETE FROM external WHERE expires_at <= ?"
_ENDED = "UPDATE external SET ended = 1 WHERE run_id = ? AND try_no = ?"


def begin(tx: Tx, run: ExternalRun) -> bool:
    tx.conn.execute(_EXPIRE, (tx.now,))
    row = tx.conn.execute(_FIND, (run.run_id, run.try_no)).fetchone()
    if row is not None:
        return bool(row["executor"] == run.executor)
    expires = tx.now + micros(EXTERNAL_TTL)
    tx.conn.execute(_INSERT, (run.run_id, run.try_no, run.executor, tx.now, expires))
    return True


def end(tx: Tx, run: ExternalRun, result: AttemptResult) -> bool:
    row = tx.conn.execute(_FIND, (run.run_id, run.try_no)).fetchone()
    if row is None or row["executor"] != run.executor:
        return False
    if row["ended"]:
        return True
    tx.conn.execute(_ENDED, (run.run_id, run.try_no))
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
    end_history(tx, run.job, result_entry(record, result, tx.now))
    return True
