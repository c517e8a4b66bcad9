"""The SQL stores' chains ("Chains" in :mod:`chronod.store.base`): the links the leader sets, and
the downstream runs a run's end decides in the transaction that records the end.

Table (SQLite schema 7, PostgreSQL schema 4): ``chains(upstream PK, links)``, ``links`` a JSON
array of the links whose upstream it is (:func:`link_json`), each with the epoch of the lease
that set it. The statements are the caller's dialect's (:class:`ChainSQL`); the rules are here
once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chronod.store.records import (
    CHAIN_OUTCOMES,
    ChainLink,
    Outcome,
    RunState,
    chained_run_id,
    overlap_reason,
)
from chronod.store.sqlite.outbox import SQLTx
from chronod.store.sqlite.rows import history_entry


@dataclass(frozen=True, kw_only=True)
class ChainSQL:
    """The statements of :class:`Chains` in one SQL dialect."""

    links_of: str  # (upstream,) → links
    paused_of: str  # (job,) → paused
    newest_active: str  # (job,) → run_id, state
    clear: str
    insert: str  # (upstream, links)
    run_live: str  # (run_id,)
    insert_run: str  # named, as the queue's
    insert_history: str
    trim_history: str


def chain_sql(mark: str, **shared: str) -> ChainSQL:
    """:class:`ChainSQL` with the parameter ``mark`` and the queue's ``shared`` statements."""
    own = {
        "links_of": "SELECT links FROM chains WHERE upstream = ?",
        "paused_of": "SELECT paused FROM jobs WHERE name = ?",
        # The job's newest live run, as dispatch names it (and Redis's live:<job> by seq).
        "newest_active": "SELECT run_id, state FROM runs WHERE job = ? ORDER BY seq DESC LIMIT 1",
        "run_live": "SELECT 1 AS live FROM runs WHERE run_id = ?",
        "clear": "DELETE FROM chains",
        "insert": "INSERT INTO chains (upstream, links) VALUES (?, ?)",
    }
    return ChainSQL(**{k: v.replace("?", mark) for k, v in own.items()}, **shared)


def link_json(link: ChainLink, epoch: int) -> dict[str, Any]:
    """A link as stored (SQL and Redis alike): what a run's end needs to create the run."""
    return {
        "job": link.job,
        "when": link.when,
        "queue": link.queue,
        "digest": link.digest,
        "overlap": link.overlap,
        "max_attempts": link.max_attempts,
        "epoch": epoch,
    }


def links_by_upstream(links: Sequence[ChainLink], epoch: int) -> dict[str, str]:
    """The stored form: per upstream job, the JSON array of its links."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for link in links:
        grouped.setdefault(link.upstream, []).append(link_json(link, epoch))
    return {upstream: json.dumps(found) for upstream, found in grouped.items()}


@dataclass(frozen=True)
class Chains:
    """The chains' rules over the statements ``sql``, inside the caller's transaction."""

    sql: ChainSQL

    def set_links(self, tx: SQLTx, links: Sequence[ChainLink], epoch: int) -> None:
        """Replace every link (the caller fenced the transaction)."""
        tx.conn.execute(self.sql.clear)
        rows = list(links_by_upstream(links, epoch).items())
        if rows:
            tx.conn.cursor().executemany(self.sql.insert, rows)

    def follow(self, tx: SQLTx, entry: Mapping[str, Any]) -> None:
        """Decide the downstream runs the run end ``entry`` (a history entry) starts."""
        upstream, run_id = entry.get("job"), entry.get("run_id")
        if not isinstance(upstream, str) or not isinstance(run_id, str):
            return
        row = tx.conn.execute(self.sql.links_of, (upstream,)).fetchone()
        if row is None:
            return
        for link in json.loads(row["links"]):
            if entry["outcome"] in CHAIN_OUTCOMES.get(link["when"], ()):
                self._start(tx, link, chained_run_id(link["job"], run_id, upstream), entry)

    def _start(
        self, tx: SQLTx, link: Mapping[str, Any], run_id: str, entry: Mapping[str, Any]
    ) -> None:
        job = link["job"]
        paused = tx.conn.execute(self.sql.paused_of, (job,)).fetchone()
        if paused is not None and paused["paused"] == 1:
            return
        if tx.conn.execute(self.sql.run_live, (run_id,)).fetchone() is not None:
            return  # live already (the upstream's end is recorded once: never, but cheap)
        active = tx.conn.execute(self.sql.newest_active, (job,)).fetchone()
        run = {
            "run_id": run_id,
            "job": job,
            "slot": entry["slot"],
            "manual": 0,
            "state": RunState.QUEUED.value,
            "queue": link["queue"],
            "digest": link["digest"],
            "epoch": link["epoch"],
            "attempt": 0,
            "max_attempts": link["max_attempts"],
            "created_at": tx.now,
            "not_before": tx.now,
        }
        if active is not None and link["overlap"] == "skip":
            reason = overlap_reason(str(active["run_id"]), str(active["state"]))
            skipped = history_entry(run, Outcome.SKIPPED, tx.now, error=reason)
            del skipped["state"]
            tx.conn.execute(self.sql.insert_history, skipped)
            tx.conn.execute(self.sql.trim_history, {"job": job, "keep": tx.keep})
            return
        if active is not None and link["overlap"] == "queue":
            run["state"] = RunState.WAITING.value
        tx.conn.execute(self.sql.insert_run, run)
