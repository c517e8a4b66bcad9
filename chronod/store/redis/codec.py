"""The Redis store's values: script replies decoded into records, and dispatch items encoded for
``dispatch.lua``.

Anyone with write access can leave a run hash or a history entry chronod cannot read (a field
missing, not a number, an instant out of range, an entry that is not a JSON object). Decoding
checks every field and raises MalformedRecord naming the first bad one; readers then show the
record as quarantined and claim quarantines the run ("Malformed records" in
:mod:`chronod.store.base`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from chronod.instants import from_micros
from chronod.store._common import NAMED, InstantMemo, MalformedRecord, RecordReader, shown
from chronod.store.base import (
    Claim,
    DispatchResult,
    DispatchStatus,
    JobState,
    RunRecord,
    SlotDispatch,
    superseded_reason,
)

Fields = Mapping[str, Any]

_DISPATCH_STATUS = {status.value: status for status in DispatchStatus}


def as_int(text: str | int) -> int:
    """A number from a reply. Redis prints sorted-set scores with %.17g: integral below 2**53,
    but be exact either way."""
    if isinstance(text, int):
        return text
    return int(text) if text.lstrip("-").isdigit() else int(float(text))


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """HGETALL's flat reply as a dict."""
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def job_of(run_id: str) -> str:
    # Run ids are NAME@<instant>[~manual]; the instant never contains '@', the name might.
    return run_id.rsplit("@", 1)[0]


class FieldsReader(RecordReader[Fields]):
    """Fields of Redis records: strings in a run or job hash, a history entry's JSON object."""

    absent = (None, "")

    def present(self, record: Fields, name: str) -> Any:
        if name not in record:
            raise MalformedRecord(f"{name} is missing")
        return record[name]

    def get(self, record: Fields, name: str) -> Any:
        return record.get(name)

    def has(self, record: Fields, name: str) -> bool:
        return name in record

    def integer(self, record: Fields, name: str, low: int = 0, high: int | None = None) -> int:
        value = self.present(record, name)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise MalformedRecord(f"{name} is not an integer ({shown(value)})")
        try:
            number = as_int(value)
        except (ValueError, OverflowError):
            raise MalformedRecord(f"{name} is not an integer ({shown(value)})") from None
        if number < low or (high is not None and number > high):
            raise MalformedRecord(f"{name} is out of range ({shown(value)})")
        return number

    def flag(self, record: Fields, name: str) -> bool:
        value = self.present(record, name)
        if value not in ("0", "1"):
            raise MalformedRecord(f"{name} is not 0 or 1 ({shown(value)})")
        return bool(value == "1")

    def job(self, reply: Sequence[Any]) -> JobState:
        """A ``job_reply`` (_common.lua): name, active count, HGETALL of the job hash."""
        name, active, flat = reply
        return self.job_state(pairs(flat), str(name), int(active))

    def entry(self, text: str) -> RunRecord:
        """A history entry (JSON text), as :meth:`readable` decodes it."""
        try:
            fields = json.loads(text)
        except ValueError:
            return self.unreadable({}, f"history entry is not JSON ({shown(text)})")
        if not isinstance(fields, dict):
            return self.unreadable({}, f"history entry is not a JSON object ({shown(text)})")
        return self.readable(fields, ended=True)

    def found_run(self, reply: Any) -> RunRecord | None:
        """A ``find_run`` reply: {'live', HGETALL} | {'history', json} | nil."""
        if not reply:
            return None
        kind, payload = reply
        if kind == "live":
            return self.readable(pairs(payload), ended=False)
        return self.entry(payload)

    def claim(self, fields: Fields) -> Claim:
        """A claim.lua reply (the running run's hash), every field checked (MalformedRecord)."""
        return Claim(
            run=self.run(fields, ended=False),
            token=self.text(fields, "token"),
            attempt=self.integer(fields, "attempt"),
            lease_expires_at=self.instant(fields, "lease_expires"),
        )


READ = FieldsReader()


class DispatchEncoder:
    """Encodes dispatch items for dispatch.lua, each distinct instant and duration once per
    :meth:`RedisStore.dispatch` call (see :class:`~chronod.store._common.InstantMemo`)."""

    def __init__(self) -> None:
        self._instants = InstantMemo()
        self._ttls: dict[timedelta, str] = {}

    def chunk(self, items: Sequence[SlotDispatch], run_ids: list[str]) -> str:
        """The JSON argument of one dispatch.lua call; appends each item's run id to ``run_ids``."""
        flat: list[str] = []
        instants, ttls = self._instants, self._ttls
        for item in items:
            slot = instants[item.slot]
            due = "" if item.next_due is None else instants[item.next_due].text
            ttl = ttls.get(item.guard_ttl)
            if ttl is None:
                ttl = ttls[item.guard_ttl] = str(
                    max(1, item.guard_ttl // timedelta(milliseconds=1))
                )
            run_id = f"{item.job}@{slot.iso}"  # instants.slot_id, with the formatting memoized
            run_ids.append(run_id)
            flat += (
                item.job,
                item.fingerprint,
                slot.text,
                due,
                item.queue,
                item.digest,
                item.overlap,
                str(item.max_attempts),
                ttl,
                run_id,
                "" if item.superseded_by is None else superseded_reason(item.superseded_by),
            )
        return json.dumps(flat, separators=(",", ":"))


def dispatch_results(reply: Sequence[Any], run_ids: Iterator[str]) -> list[DispatchResult]:
    """The results of one dispatch.lua call (see its Returns); its items' run ids are the next
    ones of ``run_ids``."""
    _, at, statuses, earlier = reply
    decided_at = from_micros(as_int(at))
    firsts = iter(earlier.split())
    results: list[DispatchResult] = []
    for text in statuses.split():
        status, run_id = _DISPATCH_STATUS[text], next(run_ids)
        if status is DispatchStatus.DUPLICATE:
            first = from_micros(as_int(next(firsts)))  # when the first decision was made
            results.append(DispatchResult(status=status, run_id=run_id, dispatched_at=first))
        else:
            named = run_id if status in NAMED else None
            results.append(DispatchResult(status=status, run_id=named, dispatched_at=decided_at))
    return results
