"""Rows of the SQLite store: reading them into records, and the statements and parameters that
the leader's writes and the queue's share.

SQLite stores whatever is written into a column (type affinity only converts what it can), so a row
written by hand may hold text where chronod wrote an integer, a number too large for an instant, and
so on. Decoding checks every field and raises MalformedRecord naming the first bad one; readers then
show the row as quarantined and claim quarantines it ("Malformed records" in
:mod:`chronod.store.base`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from chronod.store._common import MAX_MICROS, MalformedRecord, RecordReader, output_tail, shown
from chronod.store.records import AttemptResult, JobState, Outcome, RunRecord, WorkerInfo

Row = Mapping[str, Any] | sqlite3.Row

JOB_COLUMNS = """name, fingerprint, watermark, last_slot, next_due, paused, last_outcome,
    last_outcome_at, last_success_at, missed,
    (SELECT COUNT(*) FROM runs WHERE runs.job = jobs.name) AS active"""
JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?"
RUN_COLUMNS = """seq, run_id, job, slot, manual, state, queue, digest, epoch, attempt,
    max_attempts, created_at, not_before, started_at, worker, token, lease_expires_at"""
INSERT_HISTORY = """INSERT INTO history (run_id, job, slot, manual, outcome, queue, digest, epoch,
        attempt, max_attempts, created_at, not_before, started_at, finished_at, worker, exit_code,
        output, error, token, status)
    VALUES (:run_id, :job, :slot, :manual, :outcome, :queue, :digest, :epoch, :attempt,
        :max_attempts, :created_at, :not_before, :started_at, :finished_at, :worker, :exit_code,
        :output, :error, :token, :status)"""
# Keep the newest N entries of a job: find the (N+1)-th newest and delete it and everything older.
# When the job has N or fewer entries the subquery is NULL and nothing matches.
TRIM_HISTORY = """DELETE FROM history WHERE job = :job AND seq <=
    (SELECT seq FROM history WHERE job = :job ORDER BY seq DESC LIMIT 1 OFFSET :keep)"""


class RowReader(RecordReader[Row]):
    """Fields of SQLite rows: typed columns (live runs, history entries, job rows)."""

    outcome_field = "outcome"

    def present(self, record: Row, name: str) -> Any:
        return record[name]

    def get(self, record: Row, name: str) -> Any:
        try:
            return record[name]
        except (IndexError, KeyError):  # (sqlite3.Row raises IndexError)
            return None

    def has(self, record: Row, name: str) -> bool:
        return name in record.keys()  # noqa: SIM118 (`in` a sqlite3.Row looks at its values)

    def ends_in(self, ended: bool) -> bool:
        return ended  # only history rows have those columns

    def integer(self, record: Row, name: str, low: int = 0, high: int | None = None) -> int:
        value = record[name]
        if type(value) is not int:
            raise MalformedRecord(f"{name} is not an integer ({shown(value)})")
        if value < low or (high is not None and value > high):
            raise MalformedRecord(f"{name} is out of range ({value})")
        return value

    def flag(self, record: Row, name: str) -> bool:
        return bool(self.integer(record, name, 0, 1))

    def live(self, row: Row) -> RunRecord:
        """A live run, every field checked (raises MalformedRecord)."""
        return self.run(row, ended=False)

    def job(self, row: Row) -> JobState:
        """A job row (with its ``active`` count) as read, leniently."""
        return self.job_state(row, str(row["name"]), int(row["active"]))

    def job_problem(self, row: Row) -> str | None:
        """What makes a job row unusable for the leader (None: nothing).

        Every dispatch batch reads one per due job (100,000 in a large tick): the instants are
        checked as :meth:`optional_instant` would, by range, without building datetimes."""
        try:
            self.text(row, "fingerprint")
            for name in ("watermark", "last_slot", "next_due"):
                if self.get(row, name) not in self.absent:
                    self.integer(row, name, 0, MAX_MICROS)
            self.flag(row, "paused")
            self.integer(row, "missed")
        except MalformedRecord as exc:
            return str(exc)
        return None


READ = RowReader()


def history_entry(
    run: Mapping[str, Any], outcome: Outcome, finished_at: int, **fields: Any
) -> dict[str, Any]:
    """Parameters for INSERT_HISTORY: the run's columns, the outcome, and per-entry ``fields``."""
    entry: dict[str, Any] = {
        "exit_code": None,
        "output": "",
        "error": None,
        "token": None,
        "status": None,
        "started_at": None,
        "not_before": None,
        "worker": None,
    }
    entry.update(run)
    entry.update(outcome=outcome.value, finished_at=finished_at, **fields)
    return entry


def worker_info(row: Row) -> WorkerInfo | None:
    """A ``workers`` row as a :class:`WorkerInfo`; None for a forged one (real ones are rewritten
    every few seconds)."""
    try:
        queues = json.loads(row["queues"])
        return WorkerInfo(
            worker=READ.text(row, "worker"),
            queues=tuple(str(queue) for queue in queues),
            seen_at=READ.instant(row, "seen_at"),
            running=READ.integer(row, "running"),
            concurrency=READ.integer(row, "concurrency"),
        )
    except (MalformedRecord, ValueError, TypeError):
        return None


def result_entry(
    run: Mapping[str, Any], result: AttemptResult, finished_at: int, **fields: Any
) -> dict[str, Any]:
    """:func:`history_entry` for the end of an attempt: ``result``'s outcome and fields."""
    return history_entry(
        run,
        result.outcome,
        finished_at,
        exit_code=result.exit_code,
        output=output_tail(result.output),
        error=result.error,
        **fields,
    )
