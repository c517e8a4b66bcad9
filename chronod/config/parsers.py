"""Value parsers of ``schedules.toml``: each takes what TOML gave and returns the value the model
holds, or raises ValueError/TypeError with the reason shown to the user.

They know nothing about where a value was written or about other values: the reader
(:mod:`chronod.config.reader`) locates what they refuse, and checks what needs several values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, cast

from chronod.config.model import JSONValue
from chronod.durations import parse_duration
from chronod.instants import END_OF_TIME, FIRST_INSTANT, RANGE_TEXT, check_range
from chronod.schedules.solar import DEPRESSIONS
from chronod.tz import UTC, Zone

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
CALL_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
CELERY_TASK = re.compile(r"^[A-Za-z_][\w.:\-]{0,199}$")
BROKER_URL = re.compile(r"^[a-z][a-z0-9+.\-]*://")
# Bounds on what a file may hold, so that every value `chronod check` accepts also works in
# `next`, the daemon, a reload and the web page (durations: chronod.durations.MAX_DURATION;
# instants: chronod.instants.check_range).
MAX_DEPTH = 32  # arrays and tables nested in the file, and in a job's args and kwargs
MAX_TEXT = 64 * 1024  # characters of any string, and of command, args, kwargs and env as a whole
_SHOWN = 60  # characters of a value quoted back in a message


def show(value: Any) -> str:
    """``value`` as quoted back in a message: JSON, cut short (it may be 64 MiB or 1,000 deep)."""
    if isinstance(value, str):
        return json.dumps(clip(value), ensure_ascii=False)
    try:
        return clip(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError):
        return f"a {type(value).__name__}"


def clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(f"expected {what}")
        return value

    return parse


def choice(options: tuple[str, ...]) -> Callable[[Any], Any]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError("expected one of " + ", ".join(f"'{o}'" for o in options))
        return cast(str, value)

    return parse


def int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def float_range(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return float(value)

    return parse


def _duration(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise TypeError('expected a duration string like "90s", "15m", "1h30m" or "1d"')
    return parse_duration(value)


MIN_GRACE = timedelta(milliseconds=100)


def duration_at_least(minimum: timedelta) -> Callable[[Any], timedelta]:
    def parse(value: Any) -> timedelta:
        parsed = _duration(value)
        if parsed < minimum:
            raise ValueError(f"must be at least {minimum.total_seconds():g}s")
        return parsed

    return parse


def signed_duration(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise TypeError('expected a signed duration like "-30m" or "+1h"')
    return parse_duration(value, signed=True)


def depression(value: Any) -> float:
    if isinstance(value, str):
        if value not in DEPRESSIONS:
            raise ValueError(
                "expected 'civil', 'nautical', 'astronomical' or degrees below the horizon"
            )
        return DEPRESSIONS[value]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 90:
        raise ValueError("expected 'civil', 'nautical', 'astronomical' or degrees from 0 to 90")
    return float(value)


def env(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TypeError("expected a table of string values")
    for name, text in value.items():
        if not name or "=" in name or "\0" in name or "\0" in text:
            raise ValueError(
                f"{show(name)}: a variable name is not empty and has no '=', and neither name "
                "nor value has a NUL character"
            )
    _within(sum(len(k) + len(v) for k, v in value.items()), "the variables")
    return MappingProxyType(dict(value))


def command(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("command is empty")
        _no_nul(value)
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        for item in value:
            _no_nul(item)
        _within(sum(len(v) for v in value), "the arguments")
        return tuple(value)
    raise TypeError("expected a string (run by /bin/sh -c) or a non-empty array of strings (argv)")


def path(value: Any) -> str:
    _no_nul(string(value))
    return cast(str, value)


def _no_nul(text: str) -> None:
    # The kernel takes C strings: exec() refuses one with a NUL in it, at run time.
    if "\0" in text:
        raise ValueError("must not contain a NUL character (\\u0000)")


def _within(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise ValueError(f"{what} take more than {MAX_TEXT} characters")


def json_list(value: Any) -> tuple[JSONValue, ...]:
    if not isinstance(value, list):
        raise TypeError("expected an array")
    _require_json(value)
    return tuple(value)


def json_table(value: Any) -> Mapping[str, JSONValue]:
    if not isinstance(value, dict):
        raise TypeError("expected a table")
    _require_json(value)
    return MappingProxyType(dict(value))


def _require_json(value: Any) -> None:
    # Depth first, without recursion: json.dumps recurses, and runs take args as JSON.
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("must be JSON-serializable (no dates, times or NaN)") from None
    _within(len(text), "as JSON, they")


def _depth(value: Any) -> int:
    """How deeply lists and tables nest in ``value`` (a scalar is 0), counted without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_DEPTH:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


EVERY = duration_at_least(timedelta(seconds=1))
JITTER = duration_at_least(timedelta(seconds=1))

# Keys read the same way on every job (after [defaults]), with their parsers.
SIMPLE_JOB_KEYS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {
        "description": string,
        "queue": matching(QUEUE_NAME, "letters, digits, '_', '.', '-'"),
        "timeout": duration_at_least(timedelta(seconds=1)),
        "retries": int_range(0, 100),
        "retry_delay": duration_at_least(timedelta()),
        "kill_grace": duration_at_least(timedelta()),
        # A dispatch is always some milliseconds late: with grace 0 every slot would be missed.
        "grace": duration_at_least(MIN_GRACE),
        "catchup": choice(("none", "latest", "all")),
        "catchup_limit": int_range(1, 100_000),
        "overlap": choice(("skip", "queue", "allow")),
        "env": env,
        "cwd": path,
    }
)
# Solar keys that [defaults] may hold, with their parsers.
SOLAR_PARSERS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {
        "latitude": float_range(-90.0, 90.0),
        "longitude": float_range(-180.0, 180.0),
        "elevation": float_range(-500.0, 9000.0),
        "depression": depression,
    }
)
# [chronod] keys with their parsers ('store' is checked further by chronod.store).
DAEMON_PARSERS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {
        "store": string,
        "lease": duration_at_least(timedelta(seconds=2)),
        "namespace": matching(NAMESPACE, "letters, digits, '_', '.', ':', '-'"),
        "workers": int_range(0, 1024),
        "drain_timeout": duration_at_least(timedelta()),
        "attempt_lease": duration_at_least(timedelta(seconds=1)),
        "history": int_range(1, 100_000),
        "web_token": string,
        "replica_acks": int_range(0, 16),
    }
)


def parse_instant(value: Any, zone: Zone) -> datetime:
    """An ISO 8601 instant; without an offset, wall time in the job's zone (DST rule applied).

    It must lie in chronod.instants' range (1970 to 9998), checked before any arithmetic on it.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                value = date.fromisoformat(value)
            except ValueError:
                raise ValueError("expected an ISO 8601 date or date-time") from None
    if isinstance(value, time):
        raise TypeError("expected a date or date-time, not a time of day")
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise TypeError("expected an ISO 8601 date or date-time")
    if not FIRST_INSTANT.year <= value.year < END_OF_TIME.year:
        raise ValueError(f"expected an instant {RANGE_TEXT}")
    if value.tzinfo is not None:
        return check_range(value.astimezone(UTC))
    resolution = zone.resolve(value)
    if resolution.instants:
        return check_range(resolution.instants[0])
    assert resolution.gap_end is not None
    return check_range(resolution.gap_end)
