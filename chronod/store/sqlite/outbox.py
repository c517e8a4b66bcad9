"""The SQLite store's outbox ("Outbox" in :mod:`chronod.store.base`): events appended in the
transaction that ends a run, read and settled by the delivering process.

Tables (schema 4): ``event_kinds(job PK, kinds)`` (a JSON array per job with any) and
``outbox(seq AUTOINCREMENT, event_id UNIQUE, kind, entry, created_at, not_before, attempts,
done)``, the entry being the history entry as JSON; ``counters.outbox_dropped`` counts what a full
outbox dropped.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from chronod.instants import from_micros, to_micros
from chronod.store._common import shown
from chronod.store.records import (
    EVENT_OUTPUT,
    UNSUCCESSFUL,
    ChannelDelivery,
    OutboxEvent,
    OutboxStats,
    Outcome,
)
from chronod.store.sqlite.connection import Tx
from chronod.store.sqlite.rows import READ

_KINDS_OF = "SELECT kinds FROM event_kinds WHERE job = ?"
_LAST_OUTCOME = "SELECT last_outcome FROM jobs WHERE name = ?"
_APPEND = """INSERT OR IGNORE INTO outbox (event_id, kind, entry, created_at, not_before)
    VALUES (?, ?, ?, ?, ?)"""
_DEPTH = "SELECT count(*) FROM outbox"
# The oldest events beyond the limit: the (limit)-th newest and everything older than it go.
_DROP_OLDEST = """DELETE FROM outbox WHERE seq <=
    (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET ?)"""
_COUNT_DROPPED = "UPDATE counters SET value = value + ? WHERE name = 'outbox_dropped'"
_DROPPED = "SELECT value FROM counters WHERE name = 'outbox_dropped'"
_DUE = """SELECT event_id, kind, entry, created_at, attempts, done FROM outbox
    WHERE not_before <= ? ORDER BY not_before, seq LIMIT ?"""
_SETTLE = "UPDATE outbox SET attempts = ?, done = ?, not_before = ? WHERE event_id = ?"
_DELIVERED = "DELETE FROM outbox WHERE event_id = ?"
# The history columns an event carries (a live run's lease fields and seq are no news).
_ENTRY_FIELDS = [
    "run_id",
    "job",
    "slot",
    "manual",
    "outcome",
    "queue",
    "digest",
    "epoch",
    "attempt",
    "max_attempts",
    "created_at",
    "not_before",
    "started_at",
    "finished_at",
    "worker",
    "exit_code",
    "output",
    "error",
]


def event_kind(kinds: Sequence[str], outcome: str, previous: str | None) -> str | None:
    """The kind of event a run end with ``outcome`` makes, given the job's ``kinds`` and its
    last outcome before it (``recovered`` wins over ``succeeded``); None for no event."""
    if outcome == Outcome.SUCCEEDED.value and previous in UNSUCCESSFUL and "recovered" in kinds:
        return "recovered"
    return outcome if outcome in kinds else None


def previous_outcome(tx: Tx, job: str) -> str | None:
    """The job's last outcome, read before a run end replaces it."""
    row = tx.conn.execute(_LAST_OUTCOME, (job,)).fetchone()
    return None if row is None or not isinstance(row[0], str) else row[0]


def append(
    tx: Tx, entry: Mapping[str, Any], previous: str | None, *, started: bool = False
) -> None:
    """Append the event the history ``entry`` of a run end makes, if its job's kinds want one;
    with ``started``, the ``started`` event of the running run ``entry`` (an attempt began)."""
    job = entry.get("job")
    if not isinstance(job, str):
        return
    row = tx.conn.execute(_KINDS_OF, (job,)).fetchone()
    if row is None:
        return
    kinds = json.loads(row[0])
    if started:
        kind: str | None = "started" if "started" in kinds else None
    else:
        kind = event_kind(kinds, str(entry["outcome"]), previous)
    if kind is None:
        return
    carried = {name: entry.get(name) for name in _ENTRY_FIELDS}
    if started:
        carried["state"] = "running"  # a live run's record, not a history entry
    carried["output"] = _tail(str(entry.get("output") or ""))
    run_id, attempt = entry.get("run_id"), entry.get("attempt")
    event_id = f"{run_id if isinstance(run_id, str) else shown(run_id)}#{attempt}:{kind}"
    tx.conn.execute(_APPEND, (event_id, kind, json.dumps(carried), tx.now, tx.now))
    depth = tx.conn.execute(_DEPTH).fetchone()[0]
    if depth > tx.outbox_limit:
        tx.conn.execute(_DROP_OLDEST, (max(tx.outbox_limit, 0),))
        tx.conn.execute(_COUNT_DROPPED, (depth - max(tx.outbox_limit, 0),))


def _tail(text: str) -> str:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= EVENT_OUTPUT:
        return text
    return data[-EVENT_OUTPUT:].decode("utf-8", errors="ignore")


def set_kinds(tx: Tx, kinds: Mapping[str, frozenset[str]]) -> None:
    """Replace every job's event kinds (the caller fenced the transaction)."""
    tx.conn.execute("DELETE FROM event_kinds")
    tx.conn.executemany(
        "INSERT INTO event_kinds (job, kinds) VALUES (?, ?)",
        [(job, json.dumps(sorted(found))) for job, found in kinds.items() if found],
    )


def due(conn: sqlite3.Connection, now: datetime, limit: int) -> list[OutboxEvent]:
    rows = conn.execute(_DUE, (to_micros(now), max(limit, 0))).fetchall()
    return [
        OutboxEvent(
            event_id=row["event_id"],
            kind=row["kind"],
            run=READ.readable(json.loads(row["entry"]), ended=row["kind"] != "started"),
            created_at=from_micros(row["created_at"]),
            attempts=row["attempts"],
            done=tuple(json.loads(row["done"])),
        )
        for row in rows
    ]


def settle(
    tx: Tx, event_id: str, attempts: int, done: Sequence[str], retry_at: datetime | None
) -> bool:
    if retry_at is None:
        return tx.conn.execute(_DELIVERED, (event_id,)).rowcount == 1
    values = (attempts, json.dumps(list(done)), to_micros(retry_at), event_id)
    return tx.conn.execute(_SETTLE, values).rowcount == 1


def stats(conn: sqlite3.Connection) -> OutboxStats:
    dropped = conn.execute(_DROPPED).fetchone()
    return OutboxStats(
        depth=int(conn.execute(_DEPTH).fetchone()[0]),
        dropped=int(dropped[0]) if dropped is not None else 0,
    )


_DELIVERED_OK = """INSERT INTO deliveries (channel, last_ok_at) VALUES (?, ?)
    ON CONFLICT (channel) DO UPDATE SET last_ok_at = excluded.last_ok_at"""
_DELIVERY_FAILED = """INSERT INTO deliveries (channel, last_error, last_error_at) VALUES (?, ?, ?)
    ON CONFLICT (channel) DO UPDATE SET
        last_error = excluded.last_error, last_error_at = excluded.last_error_at"""
_DELIVERIES = (
    "SELECT channel, last_ok_at, last_error, last_error_at FROM deliveries ORDER BY channel"
)
MAX_ERROR = 500


def note_delivery(tx: Tx, channel: str, error: str | None) -> None:
    if error is None:
        tx.conn.execute(_DELIVERED_OK, (channel, tx.now))
    else:
        tx.conn.execute(_DELIVERY_FAILED, (channel, error[:MAX_ERROR], tx.now))


def deliveries(conn: sqlite3.Connection) -> list[ChannelDelivery]:
    return [
        ChannelDelivery(
            channel=str(row["channel"]),
            last_ok_at=_instant(row["last_ok_at"]),
            last_error=row["last_error"] if isinstance(row["last_error"], str) else None,
            last_error_at=_instant(row["last_error_at"]),
        )
        for row in conn.execute(_DELIVERIES)
    ]


def _instant(value: object) -> datetime | None:
    return from_micros(value) if type(value) is int else None
