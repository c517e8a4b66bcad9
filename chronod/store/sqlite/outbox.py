"""The SQL stores' outbox ("Outbox" in :mod:`chronod.store.base`): events appended in the
transaction that ends a run, read and settled by the delivering process.

Tables (SQLite schema 4, PostgreSQL schema 2): ``event_kinds(job PK, kinds)`` (a JSON array per
job with any) and ``outbox(seq, event_id UNIQUE, kind, entry, created_at, not_before, attempts,
done)``, the entry being the history entry as JSON; ``counters.outbox_dropped`` counts what a full
outbox dropped. The statements are plain SQL both databases take; only the parameter mark differs
(:func:`outbox_sql`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chronod.instants import from_micros, to_micros
from chronod.store._common import shown
from chronod.store.records import (
    EVENT_OUTPUT,
    UNSUCCESSFUL,
    ChannelDelivery,
    OutboxEvent,
    OutboxStats,
    Outcome,
    Quarantined,
)
from chronod.store.sqlite.rows import READ

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
MAX_ERROR = 500


class SQLTx(Protocol):
    """What the SQL stores' writes need of a transaction (both SQL stores' ``Tx`` have it)."""

    @property
    def conn(self) -> Any:  # sqlite3.Connection or psycopg.Connection: execute → cursor
        ...

    @property
    def now(self) -> int: ...

    @property
    def keep(self) -> int: ...

    @property
    def outbox_limit(self) -> int: ...

    @property
    def quarantined(self) -> list[Quarantined]: ...


@dataclass(frozen=True, kw_only=True)
class OutboxSQL:
    """The outbox's statements with one dialect's positional parameter mark."""

    kinds_of: str
    last_outcome: str
    append: str
    depth: str
    drop_oldest: str  # the oldest events beyond the limit: the (limit)-th newest and older
    count_dropped: str
    dropped: str
    due: str
    settle: str
    delivered: str
    clear_kinds: str
    insert_kinds: str
    delivered_ok: str
    delivery_failed: str
    deliveries: str


def outbox_sql(mark: str) -> OutboxSQL:
    """The outbox's statements with ``mark`` (``?`` for SQLite, ``%s`` for psycopg)."""
    statements = OutboxSQL(
        kinds_of="SELECT kinds FROM event_kinds WHERE job = ?",
        last_outcome="SELECT last_outcome FROM jobs WHERE name = ?",
        append="""INSERT INTO outbox (event_id, kind, entry, created_at, not_before)
            VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING""",
        depth="SELECT count(*) AS n FROM outbox",
        drop_oldest="""DELETE FROM outbox WHERE seq <=
            (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET ?)""",
        count_dropped="UPDATE counters SET value = value + ? WHERE name = 'outbox_dropped'",
        dropped="SELECT value FROM counters WHERE name = 'outbox_dropped'",
        due="""SELECT event_id, kind, entry, created_at, attempts, done FROM outbox
            WHERE not_before <= ? ORDER BY not_before, seq LIMIT ?""",
        settle="UPDATE outbox SET attempts = ?, done = ?, not_before = ? WHERE event_id = ?",
        delivered="DELETE FROM outbox WHERE event_id = ?",
        clear_kinds="DELETE FROM event_kinds",
        insert_kinds="INSERT INTO event_kinds (job, kinds) VALUES (?, ?)",
        delivered_ok="""INSERT INTO deliveries (channel, last_ok_at) VALUES (?, ?)
            ON CONFLICT (channel) DO UPDATE SET last_ok_at = excluded.last_ok_at""",
        delivery_failed="""INSERT INTO deliveries (channel, last_error, last_error_at)
            VALUES (?, ?, ?) ON CONFLICT (channel) DO UPDATE SET
                last_error = excluded.last_error, last_error_at = excluded.last_error_at""",
        deliveries="""SELECT channel, last_ok_at, last_error, last_error_at FROM deliveries
            ORDER BY channel""",
    )
    if mark == "?":
        return statements
    fields = {name: getattr(statements, name).replace("?", mark) for name in _FIELDS}
    return OutboxSQL(**fields)


_FIELDS = tuple(OutboxSQL.__dataclass_fields__)


def event_kind(kinds: Sequence[str], outcome: str, previous: str | None) -> str | None:
    """The kind of event a run end with ``outcome`` makes, given the job's ``kinds`` and its
    last outcome before it (``recovered`` wins over ``succeeded``); None for no event."""
    if outcome == Outcome.SUCCEEDED.value and previous in UNSUCCESSFUL and "recovered" in kinds:
        return "recovered"
    return outcome if outcome in kinds else None


def _tail(text: str) -> str:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= EVENT_OUTPUT:
        return text
    return data[-EVENT_OUTPUT:].decode("utf-8", errors="ignore")


def _instant(value: object) -> datetime | None:
    return from_micros(value) if type(value) is int else None


@dataclass(frozen=True)
class Outbox:
    """The outbox's rules over the statements ``sql``; writes run in the caller's transaction,
    reads on a connection."""

    sql: OutboxSQL

    def previous_outcome(self, tx: SQLTx, job: str) -> str | None:
        """The job's last outcome, read before a run end replaces it."""
        row = tx.conn.execute(self.sql.last_outcome, (job,)).fetchone()
        value = None if row is None else row["last_outcome"]
        return value if isinstance(value, str) else None

    def append(
        self, tx: SQLTx, entry: Mapping[str, Any], previous: str | None, *, started: bool = False
    ) -> None:
        """Append the event the history ``entry`` of a run end makes, if its job's kinds want one;
        with ``started``, the ``started`` event of the running run ``entry`` (an attempt began)."""
        job = entry.get("job")
        if not isinstance(job, str):
            return
        row = tx.conn.execute(self.sql.kinds_of, (job,)).fetchone()
        if row is None:
            return
        kinds = json.loads(row["kinds"])
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
        tx.conn.execute(self.sql.append, (event_id, kind, json.dumps(carried), tx.now, tx.now))
        depth = int(tx.conn.execute(self.sql.depth).fetchone()["n"])
        if depth > tx.outbox_limit:
            # Count what was deleted, not depth - limit: a PostgreSQL claim appends at READ
            # COMMITTED, where two appends may both see one event too many and delete it once.
            dropped = tx.conn.execute(self.sql.drop_oldest, (max(tx.outbox_limit, 0),)).rowcount
            if dropped > 0:
                tx.conn.execute(self.sql.count_dropped, (dropped,))

    def set_kinds(self, tx: SQLTx, kinds: Mapping[str, frozenset[str]]) -> None:
        """Replace every job's event kinds (the caller fenced the transaction)."""
        tx.conn.execute(self.sql.clear_kinds)
        rows = [(job, json.dumps(sorted(found))) for job, found in kinds.items() if found]
        if rows:
            tx.conn.cursor().executemany(self.sql.insert_kinds, rows)

    def due(self, conn: Any, now: datetime, limit: int) -> list[OutboxEvent]:
        rows = conn.execute(self.sql.due, (to_micros(now), max(limit, 0))).fetchall()
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
        self,
        tx: SQLTx,
        event_id: str,
        attempts: int,
        done: Sequence[str],
        retry_at: datetime | None,
    ) -> bool:
        if retry_at is None:
            return bool(tx.conn.execute(self.sql.delivered, (event_id,)).rowcount == 1)
        values = (attempts, json.dumps(list(done)), to_micros(retry_at), event_id)
        return bool(tx.conn.execute(self.sql.settle, values).rowcount == 1)

    def stats(self, conn: Any) -> OutboxStats:
        dropped = conn.execute(self.sql.dropped).fetchone()
        return OutboxStats(
            depth=int(conn.execute(self.sql.depth).fetchone()["n"]),
            dropped=int(dropped["value"]) if dropped is not None else 0,
        )

    def note_delivery(self, tx: SQLTx, channel: str, error: str | None) -> None:
        if error is None:
            tx.conn.execute(self.sql.delivered_ok, (channel, tx.now))
        else:
            tx.conn.execute(self.sql.delivery_failed, (channel, error[:MAX_ERROR], tx.now))

    def deliveries(self, conn: Any) -> list[ChannelDelivery]:
        return [
            ChannelDelivery(
                channel=str(row["channel"]),
                last_ok_at=_instant(row["last_ok_at"]),
                last_error=row["last_error"] if isinstance(row["last_error"], str) else None,
                last_error_at=_instant(row["last_error_at"]),
            )
            for row in conn.execute(self.sql.deliveries)
        ]


SQLITE_OUTBOX = Outbox(outbox_sql("?"))
POSTGRES_OUTBOX = Outbox(outbox_sql("%s"))
