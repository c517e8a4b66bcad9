"""What the stores share: the forms of stored values that each must write
alike (run ids, output tails, refusal texts), the memo that formats a batch's instants once, and
the decoding of stored runs and job states, field by field ("Malformed records" in
:mod:`chronod.store.base`), over each store's own way of reading one field.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

from chronod.instants import format_utc, from_micros, to_micros
from chronod.store.records import (
    OUTPUT_TAIL,
    DispatchStatus,
    JobState,
    Lease,
    Outcome,
    RunRecord,
    RunState,
)
from chronod.tz import UTC

# Workers and presence announcements not seen for this long are forgotten.
SEEN_WINDOW = timedelta(minutes=1)
# The epoch stands in for an unreadable instant of a quarantined record (it is never a real one).
UNREADABLE_INSTANT = from_micros(0)
# Stored instants (µs) are valid from the Unix epoch up to here; a larger one is a forged record.
MAX_MICROS = to_micros(datetime(9999, 1, 1, tzinfo=UTC))
# Dispatch results that name their run (the others decided nothing that has a run id).
NAMED = frozenset(
    {
        DispatchStatus.QUEUED,
        DispatchStatus.WAITING,
        DispatchStatus.SKIPPED,
        DispatchStatus.DUPLICATE,
        DispatchStatus.UNCERTAIN,
    }
)

_MICROSECOND = timedelta(microseconds=1)

R = TypeVar("R")  # a stored record as one store reads it: a row, a hash, a JSON object
T = TypeVar("T")


def micros(delta: timedelta) -> int:
    """A duration in whole microseconds."""
    return delta // _MICROSECOND


def output_tail(text: str) -> str:
    """At most OUTPUT_TAIL bytes of UTF-8 from the end of ``text``, cut on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= OUTPUT_TAIL:
        return text
    return data[-OUTPUT_TAIL:].decode("utf-8", errors="ignore")


def manual_run_id(job: str, created: int) -> str:
    """The run id of a manual run created at ``created`` (µs of store time)."""
    return f"{job}@{format_utc(from_micros(created))}~manual"


def refusal(lease: Lease, held: tuple[int | None, object] | None = None) -> str:
    """Why a leader write with ``lease`` was refused (:class:`~chronod.store.base.Fenced`), from
    the lease the store ``held`` instead (epoch, None when it holds none; and node), when the
    store says."""
    ours = f"lease epoch {lease.epoch} of {lease.node}"
    if held is None:
        return f"{ours} is not the current lease"
    epoch, node = held
    if epoch is None:
        return f"{ours} refused: the store holds no lease (it expired, or the store lost it)"
    if epoch < lease.epoch:
        return (
            f"{ours} refused: the store holds epoch {epoch} of {node}, older than ours "
            "(the store went back to an older state)"
        )
    if epoch == lease.epoch:
        return f"{ours} refused: it expired in the store"
    return f"{ours} refused: another leader holds a newer epoch ({epoch}, {node})"


class Instant(NamedTuple):
    micros: int
    text: str  # micros in decimal, as Redis arguments carry it
    iso: str  # as a slot id shows it (chronod.instants.slot_id is f"{job}@{iso}")


class InstantMemo(dict[datetime, Instant]):
    """The forms of the instants of one batch, each worked out once: ``memo[instant]``.

    The items of one tick share few distinct slots, next slots and guard lifetimes (1,000 jobs
    due at the same second share one of each), and formatting an instant (its microseconds and
    the ISO text of the slot id) cost more than deciding the item. (A dict, so that an instant
    already known costs one lookup.)
    """

    def __missing__(self, instant: datetime) -> Instant:
        count = to_micros(instant)
        known = self[instant] = Instant(count, str(count), format_utc(instant))
        return known


# -- reading stored records ------------------------------------------------------------------------


class MalformedRecord(ValueError):
    """A stored record chronod cannot read; ``str()`` names the field and the value.

    Raised only inside a store's decoding: it never escapes a :class:`~chronod.store.base.Store`
    method.
    """


def shown(value: object) -> str:
    """A stored value as a problem message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def lenient(decode: Callable[[R, str], T], record: R, name: str, default: T) -> T:
    """``decode(record, name)``, or ``default`` when that field is malformed or missing."""
    try:
        return decode(record, name)
    except (MalformedRecord, KeyError, IndexError):
        return default


class RecordReader(ABC, Generic[R]):
    """Decodes a store's records into :class:`RunRecord` and :class:`JobState`, every field
    checked: the decoding is shared, reading one field is each store's own (SQLite keeps typed
    columns, Redis strings).

    The field readers raise :class:`MalformedRecord` naming the field; a strict decoding raises
    it for the first bad field, a lenient one (:meth:`readable`, :meth:`job_state`) reads what
    it can.
    """

    # The field holding a history entry's outcome.
    outcome_field = "state"
    # Stored values that mean "no value" for an optional field.
    absent: tuple[object, ...] = (None,)

    @abstractmethod
    def present(self, record: R, name: str) -> Any:
        """The value of field ``name`` (raises when the record has no such field)."""

    @abstractmethod
    def get(self, record: R, name: str) -> Any:
        """The value of field ``name``, None when the record has no such field."""

    @abstractmethod
    def integer(self, record: R, name: str, low: int = 0, high: int | None = None) -> int: ...

    @abstractmethod
    def flag(self, record: R, name: str) -> bool: ...

    @abstractmethod
    def has(self, record: R, name: str) -> bool:
        """Whether the record has field ``name`` at all."""

    def text(self, record: R, name: str) -> str:
        value = self.present(record, name)
        if not isinstance(value, str):
            raise MalformedRecord(f"{name} is not text ({shown(value)})")
        return value

    def optional_text(self, record: R, name: str) -> str | None:
        return None if self.get(record, name) is None else self.text(record, name)

    def instant(self, record: R, name: str) -> datetime:
        return from_micros(self.integer(record, name, 0, MAX_MICROS))

    def optional_instant(self, record: R, name: str) -> datetime | None:
        return None if self.get(record, name) in self.absent else self.instant(record, name)

    def outcome(self, record: R, name: str) -> Outcome:
        value = self.present(record, name)
        try:
            return Outcome(value)
        except ValueError:
            raise MalformedRecord(f"{name} is not an outcome ({shown(value)})") from None

    def run_state(self, record: R, name: str) -> RunState:
        value = self.present(record, name)
        try:
            return RunState(value)
        except ValueError:
            raise MalformedRecord(f"{name} is not a run state ({shown(value)})") from None

    def ends_in(self, ended: bool) -> bool:
        """Whether records of this kind (history entries with ``ended``, else live runs) may hold
        the fields of an attempt's end (finished_at, exit_code, output, error)."""
        return True

    def run(self, record: R, *, ended: bool) -> RunRecord:
        """A live run or, with ``ended``, a history entry (raises MalformedRecord)."""
        return RunRecord(
            **(self._ending(record) if self.ends_in(ended) else {}),
            run_id=self.text(record, "run_id"),
            job=self.text(record, "job"),
            slot=self.instant(record, "slot"),
            manual=self.flag(record, "manual"),
            state=(
                self.outcome(record, self.outcome_field)
                if ended
                else self.run_state(record, "state")
            ),
            queue=self.text(record, "queue"),
            digest=self.text(record, "digest"),
            epoch=self.integer(record, "epoch"),
            attempt=self.integer(record, "attempt"),
            max_attempts=self.integer(record, "max_attempts"),
            created_at=self.instant(record, "created_at"),
            not_before=self.optional_instant(record, "not_before"),
            started_at=self.optional_instant(record, "started_at"),
            worker=self.optional_text(record, "worker"),
        )

    def _ending(self, record: R) -> dict[str, Any]:
        """The fields of an attempt's end, as RunRecord fields."""
        exit_code = None
        if self.get(record, "exit_code") is not None:
            exit_code = self.integer(record, "exit_code", -(2**63))
        return {
            "exit_code": exit_code,
            "finished_at": self.optional_instant(record, "finished_at"),
            "output": self.text(record, "output") if self.has(record, "output") else "",
            "error": self.optional_text(record, "error"),
        }

    def readable(self, record: R, *, ended: bool) -> RunRecord:
        """:meth:`run`, or for a malformed record the quarantined record that stands for it."""
        try:
            return self.run(record, ended=ended)
        except MalformedRecord as exc:
            return self.unreadable(record, str(exc))

    def unreadable(self, record: R, problem: str) -> RunRecord:
        """What can be read of a malformed run, as a quarantined record."""
        error = f"unreadable record: {problem}"
        if self.get(record, self.outcome_field) == Outcome.QUARANTINED.value:
            error = lenient(self.text, record, "error", error)  # quarantined by claim: says why
        return RunRecord(
            run_id=lenient(self.text, record, "run_id", "?"),
            job=lenient(self.text, record, "job", "?"),
            slot=lenient(self.instant, record, "slot", UNREADABLE_INSTANT),
            manual=lenient(self.flag, record, "manual", False),
            state=Outcome.QUARANTINED,
            queue=lenient(self.text, record, "queue", ""),
            digest=lenient(self.text, record, "digest", ""),
            epoch=lenient(self.integer, record, "epoch", 0),
            attempt=lenient(self.integer, record, "attempt", 0),
            max_attempts=lenient(self.integer, record, "max_attempts", 0),
            created_at=lenient(self.instant, record, "created_at", UNREADABLE_INSTANT),
            not_before=lenient(self.optional_instant, record, "not_before", None),
            started_at=lenient(self.optional_instant, record, "started_at", None),
            finished_at=lenient(self.optional_instant, record, "finished_at", None),
            worker=lenient(self.optional_text, record, "worker", None),
            output=lenient(self.text, record, "output", ""),
            error=error,
        )

    def job_state(self, record: R, name: str, active: int) -> JobState:
        """A job's state as read; a field that cannot be read reads as unset (the leader
        re-syncs a malformed job), so status and metrics keep answering."""
        last_outcome = None
        if self.get(record, "last_outcome"):
            last_outcome = lenient(self.outcome, record, "last_outcome", None)
        return JobState(
            name=name,
            fingerprint=lenient(self.text, record, "fingerprint", ""),
            watermark=lenient(self.optional_instant, record, "watermark", None),
            last_slot=lenient(self.optional_instant, record, "last_slot", None),
            next_due=lenient(self.optional_instant, record, "next_due", None),
            paused=lenient(self.flag, record, "paused", False),
            last_outcome=last_outcome,
            last_outcome_at=lenient(self.optional_instant, record, "last_outcome_at", None),
            last_success_at=lenient(self.optional_instant, record, "last_success_at", None),
            active=active,
            missed=lenient(self.integer, record, "missed", 0),
        )
