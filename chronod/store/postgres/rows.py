"""Statements both sides of the PostgreSQL store share: the job row with its ``active`` count, the
run columns, and writing and trimming history. Rows come back as dicts and are decoded by the
SQLite store's reader (:data:`chronod.store.sqlite.rows.READ`): the columns and their meaning
are the same.
"""

from __future__ import annotations

JOB_COLUMNS = """name, fingerprint, watermark, last_slot, next_due, paused, last_outcome,
    last_outcome_at, last_success_at, missed,
    (SELECT count(*) FROM runs WHERE runs.job = jobs.name) AS active"""
JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE name = %s"
RUN_COLUMNS = """seq, run_id, job, slot, manual, state, queue, digest, epoch, attempt,
    max_attempts, created_at, not_before, started_at, worker, token, lease_expires_at"""
INSERT_HISTORY = """INSERT INTO history (run_id, job, slot, manual, outcome, queue, digest, epoch,
        attempt, max_attempts, created_at, not_before, started_at, finished_at, worker, exit_code,
        output, error, token, status)
    VALUES (%(run_id)s, %(job)s, %(slot)s, %(manual)s, %(outcome)s, %(queue)s, %(digest)s,
        %(epoch)s, %(attempt)s, %(max_attempts)s, %(created_at)s, %(not_before)s, %(started_at)s,
        %(finished_at)s, %(worker)s, %(exit_code)s, %(output)s, %(error)s, %(token)s,
        %(status)s)"""
# Keep the newest N entries of a job: find the (N+1)-th newest and delete it and everything older.
TRIM_HISTORY = """DELETE FROM history WHERE job = %(job)s AND seq <=
    (SELECT seq FROM history WHERE job = %(job)s ORDER BY seq DESC LIMIT 1 OFFSET %(keep)s)"""
