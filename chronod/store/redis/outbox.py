"""The Redis store's outbox ("Outbox" in :mod:`chronod.store.base`): the events end_run
(_common.lua) appends with the run end that caused them, read and settled by the delivering
process through their own scripts (events_due, settle_event, outbox_stats, set_event_kinds);
and the chains' links (set_chains), which end_run and end_external follow ("Chains").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from chronod.instants import from_micros, to_micros
from chronod.store._common import refusal
from chronod.store.base import (
    ChainLink,
    ChannelDelivery,
    Fenced,
    Lease,
    OutboxEvent,
    OutboxStats,
)
from chronod.store.redis.codec import READ, as_int
from chronod.store.redis.scripts import ScriptRunner
from chronod.store.sqlite.chains import links_by_upstream


class OutboxScripts(ScriptRunner):
    """The outbox methods of :class:`~chronod.store.redis.RedisStore` (its base class)."""

    def set_event_kinds(self, lease: Lease, kinds: Mapping[str, frozenset[str]]) -> None:
        wanted = {job: json.dumps(sorted(found)) for job, found in kinds.items() if found}
        reply = self._call(
            "set_event_kinds",
            [self._keys.lease, self._keys.event_kinds],
            lease.token,
            lease.epoch,
            json.dumps(wanted, separators=(",", ":")),
            strict=True,
        )
        if reply[0] == "fenced":
            epoch, node = (reply[1], reply[2]) if len(reply) >= 3 else (None, None)
            raise Fenced(refusal(lease, (as_int(epoch) if epoch else None, node)))

    def set_chains(self, lease: Lease, links: Sequence[ChainLink]) -> None:
        reply = self._call(
            "set_chains",
            [self._keys.lease, self._keys.chains],
            lease.token,
            lease.epoch,
            json.dumps(links_by_upstream(links, lease.epoch), separators=(",", ":")),
            strict=True,
        )
        if reply[0] == "fenced":
            epoch, node = (reply[1], reply[2]) if len(reply) >= 3 else (None, None)
            raise Fenced(refusal(lease, (as_int(epoch) if epoch else None, node)))

    def events_due(self, limit: int) -> list[OutboxEvent]:
        if limit <= 0:
            return []
        flat = self._call("events_due", [self._keys.outbox_due, self._keys.outbox_events], limit)
        return [_event(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]

    def settle_event(
        self, event_id: str, attempts: int, done: Sequence[str], retry_at: datetime | None
    ) -> bool:
        due = "" if retry_at is None else to_micros(retry_at)
        keys = [self._keys.outbox, self._keys.outbox_due, self._keys.outbox_events]
        reply = self._call("settle_event", keys, event_id, attempts, json.dumps(list(done)), due)
        return bool(as_int(reply))

    def note_delivery(self, channel: str, error: str | None) -> None:
        failed = "0" if error is None else "1"
        self._call("note_delivery", [self._keys.deliveries], channel, failed, (error or "")[:500])

    def deliveries(self) -> list[ChannelDelivery]:
        found = self._single(lambda pipe: pipe.hgetall(self._keys.deliveries))
        return [_delivery(str(name), str(text)) for name, text in sorted(found.items())]

    def outbox_stats(self) -> OutboxStats:
        depth, dropped = self._call("outbox_stats", [self._keys.outbox, self._keys.outbox_info])
        return OutboxStats(depth=as_int(depth), dropped=as_int(dropped))


def _event(event_id: str, text: str) -> OutboxEvent:
    fields: Any = json.loads(text)
    done = json.loads(fields.get("done") or "[]")
    return OutboxEvent(
        event_id=event_id,
        kind=str(fields["kind"]),
        run=READ.readable(fields["entry"], ended=fields["kind"] != "started"),
        created_at=from_micros(as_int(fields["created"])),
        attempts=as_int(fields.get("attempts") or 0),
        done=tuple(str(target) for target in done) if isinstance(done, list) else (),
    )


def _delivery(channel: str, text: str) -> ChannelDelivery:
    try:
        fields: Any = json.loads(text)
    except ValueError:
        fields = {}
    if not isinstance(fields, dict):
        fields = {}

    def instant(name: str) -> datetime | None:
        value = fields.get(name)
        return from_micros(as_int(value)) if isinstance(value, str) and value.isdigit() else None

    error = fields.get("error")
    return ChannelDelivery(
        channel=channel,
        last_ok_at=instant("ok_at"),
        last_error=error if isinstance(error, str) else None,
        last_error_at=instant("error_at"),
    )
