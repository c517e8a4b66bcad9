"""UTC instants as chronod writes them, and slot ids.

A slot is (job name, scheduled UTC instant); its id is ``NAME@YYYY-MM-DDTHH:MM:SSZ`` with
fractional seconds only when they are not zero. The store, messages and JSON use the same form.

Instants a user gives (``start``, ``end``, ``anchor``, ``--after``, the web page's ``at``) lie in
[:data:`FIRST_INSTANT`, :data:`END_OF_TIME`): from the Unix epoch, from which the stores count,
to a year before the end of ``datetime``'s calendar, so that a zone's offset, a duration or a
lease added to any of them stays representable.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from chronod.tz import UTC

FIRST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
# No schedule fires at or after this instant, and no instant given by a user lies there.
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
RANGE_TEXT = "from 1970-01-01 to 9998-12-31"


def check_range(instant: datetime) -> datetime:
    """``instant`` if it lies in [FIRST_INSTANT, END_OF_TIME); else ValueError (for a user)."""
    if not FIRST_INSTANT <= instant < END_OF_TIME:
        raise ValueError(f"expected an instant {RANGE_TEXT}")
    return instant


def format_utc(instant: datetime) -> str:
    """``2026-11-27T14:30:00Z`` (``.250000`` appended only when there are microseconds)."""
    utc = instant.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def parse_utc(text: str) -> datetime:
    """Inverse of :func:`format_utc`; also accepts any ISO 8601 instant with an offset."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return value.astimezone(UTC)


def slot_id(job: str, instant: datetime) -> str:
    return f"{job}@{format_utc(instant)}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def to_micros(instant: datetime) -> int:
    """Exact integer microseconds since the Unix epoch (how the stores keep instants)."""
    return (instant - _EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
