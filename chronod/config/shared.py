"""What the jobs of one load share: values parsed once, schedules built once, digests computed once.

Thousands of jobs repeat a handful of definitions (``every = "1m"``, the same cron expression,
the same command); reading each one afresh cost 100,000 jobs tens of seconds and hundreds of MB.
Nothing here decides whether a value is valid: the reader (:mod:`chronod.config.reader`) reports
the same issues and builds equal jobs with or without the sharing. One instance per load, never
kept between loads; it holds only immutable values.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time
from typing import Any, TypeVar, cast

from chronod.config.model import DigestMemo
from chronod.schedules import Schedule
from chronod.schedules.cron import CronCache

_T = TypeVar("_T")
# Values that are remembered: immutable and hashable (what TOML gives besides arrays and tables).
_SCALARS = (str, int, float, date, time)


class Shared:
    def __init__(self) -> None:
        # Cron tables and schedules by expression (CronSchedule.cached), digests by what runs.
        self.crons = CronCache()
        self.digests = DigestMemo()
        self._schedules: dict[tuple[Any, ...], Schedule] = {}
        self._values: dict[tuple[Any, ...], Any] = {}

    def value(self, kind: str, value: Any, read: Callable[[], _T | None]) -> _T | None:
        """``read()``, the value parsed as ``kind`` (None after reporting a bad one), once per
        load for each scalar value it succeeded on.

        Only successes are remembered, so every job with a bad value still reports it. The key
        holds the value's type: ``1``, ``1.0`` and ``true`` are equal in Python but not to the
        parsers.
        """
        if not isinstance(value, _SCALARS):
            return read()
        key = (kind, type(value), value)
        if key in self._values:
            return cast("_T", self._values[key])
        result = read()
        if result is not None:
            self._values[key] = result
        return result

    def schedule(self, key: tuple[Any, ...], build: Callable[[], Schedule]) -> Schedule:
        """The schedule defined by ``key``, built once per load (``build`` may raise).

        Schedules are immutable, so jobs with the same definition share one object, and with
        it the work cached on it (its fingerprint, a cron schedule's tables).
        """
        found = self._schedules.get(key)
        if found is None:
            found = self._schedules[key] = build()
        return found
