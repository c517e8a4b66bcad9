"""Parsers of the schedule keys that list dates and instants: ``exclude``, ``exclude_file``,
``at``.

Like :mod:`chronod.config.parsers`, each returns the model's value or raises ValueError/TypeError
with the reason; the reader locates it. A reason names the item (``item 3``) or the line
(``holidays.txt:3``) so that ``chronod check`` points at the one bad entry of a long list.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from chronod.instants import END_OF_TIME, FIRST_INSTANT, RANGE_TEXT, check_range
from chronod.schedules.at import AtSchedule
from chronod.tz import UTC, WallKind, Zone

MAX_DATES = 10_000  # dates of one job's exclude and exclude_file together
MAX_FILE_BYTES = 1 << 20


def one_date(value: Any) -> date:
    """A calendar date: a TOML local date or a ``YYYY-MM-DD`` string, in chronod's range."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO date like 2026-12-25") from None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError("expected a date like 2026-12-25 (a day, not a time)")
    if not FIRST_INSTANT.year <= value.year < END_OF_TIME.year:
        raise ValueError(f"expected a date {RANGE_TEXT}")
    return value


def exclude_list(value: Any) -> Mapping[date, str]:
    """``exclude = ["2026-12-25", 2027-01-01]``: each date, labelled ``exclude``."""
    if not isinstance(value, list):
        raise TypeError('expected an array of dates like ["2026-12-25"]')
    if len(value) > MAX_DATES:
        raise ValueError(f"more than {MAX_DATES} dates")
    found: dict[date, str] = {}
    for index, item in enumerate(value, start=1):
        try:
            found[one_date(item)] = "exclude"
        except (ValueError, TypeError) as exc:
            raise ValueError(f"item {index}: {exc}") from None
    return MappingProxyType(found)


def exclude_file(value: Any, directory: Path) -> Mapping[date, str]:
    """``exclude_file = "holidays.txt"`` (relative to the config file's directory): one ISO date
    per line; ``#`` starts a comment, blank lines are ignored. Each date is labelled with the file
    and line it is on, as written (``holidays.txt:3``)."""
    if not isinstance(value, str) or not value.strip():
        raise TypeError("expected the path of a file of dates, one per line")
    path = directory / value
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{value} is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{value} is not UTF-8 text") from None
    found: dict[date, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            day = one_date(entry)
        except ValueError as exc:
            shown = entry if len(entry) <= 40 else entry[:39] + "…"
            raise ValueError(f"{value}:{number}: {exc} (got {shown!r})") from None
        found.setdefault(day, f"{value}:{number}")
        if len(found) > MAX_DATES:
            raise ValueError(f"{value} lists more than {MAX_DATES} dates")
    return MappingProxyType(found)


MAX_AT = 10_000  # instants in one job's ``at``


def at_schedule(value: Any, zone: Zone) -> AtSchedule:
    """``at = ["2027-01-01T09:00", "2027-01-01T08:00:00Z", 2027-06-01T09:00:00]``: each a
    date-time, wall time in ``zone`` unless it has an offset; the item is named when bad."""
    if not isinstance(value, list) or not value:
        raise TypeError('expected a non-empty array of date-times like ["2027-01-01T09:00"]')
    if len(value) > MAX_AT:
        raise ValueError(f"more than {MAX_AT} date-times")
    instants: list[datetime] = []
    notes: dict[datetime, str] = {}
    for index, item in enumerate(value, start=1):
        try:
            instant, note = _at_item(item, zone)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"item {index}: {exc}") from None
        instants.append(instant)
        if note is not None:
            notes.setdefault(instant, note)
    return AtSchedule(instants, zone, notes)


def _at_item(value: Any, zone: Zone) -> tuple[datetime, str | None]:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("expected an ISO date-time like 2027-01-01T09:00") from None
    if not isinstance(value, datetime):
        raise TypeError("expected a date-time like 2027-01-01T09:00 (a date alone has no time)")
    if not FIRST_INSTANT.year <= value.year < END_OF_TIME.year:
        raise ValueError(f"expected an instant {RANGE_TEXT}")
    if value.tzinfo is not None:
        return check_range(value.astimezone(UTC)), None
    # Wall time in the job's zone, by the rule fixed-time cron jobs follow (docs/design.md §2).
    resolution = zone.resolve(value)
    shown = f"{value:%Y-%m-%d %H:%M}"
    if resolution.kind is WallKind.GAP:
        assert resolution.gap_end is not None
        moved = zone.to_local(resolution.gap_end)
        note = (
            f"{shown} does not exist in {zone.name} (clocks go forward): "
            f"runs at {moved:%H:%M} {moved.tzname()}"
        )
        return check_range(resolution.gap_end), note
    if resolution.kind is WallKind.AMBIGUOUS:
        first = zone.to_local(resolution.instants[0])
        note = (
            f"{shown} happens twice in {zone.name} (clocks go back): runs once, at {first.tzname()}"
        )
        return check_range(resolution.instants[0]), note
    return check_range(resolution.instants[0]), None
