"""``chronod import celery APP``: a Celery app's ``beat_schedule`` as an equivalent schedules.toml.

Each beat entry becomes a ``celery`` job (docs/celery.md). What cannot mean the same in chronod is
said in a comment above the job, and what has no chronod form at all is refused, with the reason,
in a comment at the end of the file:

* ``crontab`` → ``cron``, exactly (:mod:`chronod.celery.crontab`: Celery ANDs day-of-month with
  day-of-week, cron ORs them), or refused.
* ``timedelta``, a number of seconds, ``schedule(run_every)`` → ``every``: the period is the same,
  the phase is not (Celery counts from the task's last run, chronod from its ``anchor``).
* ``solar`` → ``solar``: the same events, computed within a minute of Celery's PyEphem.
* options: ``queue`` is kept; ``expires`` (seconds) becomes ``grace``; the rest are named in a
  comment, since a chronod job does not carry them.

Only the app is imported (it must import as ``celery -A`` would, from the working directory); the
conversion itself reads the entries' attributes and is pure.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from chronod.celery.crontab import Untranslatable, translate
from chronod.config.parsers import CELERY_TASK, QUEUE_NAME
from chronod.tz import UnknownZone, get_zone

# Celery's solar events → chronod's (event, depression).
SOLAR_EVENTS: Mapping[str, tuple[str, str | None]] = {
    "dawn_astronomical": ("dawn", "astronomical"),
    "dawn_nautical": ("dawn", "nautical"),
    "dawn_civil": ("dawn", "civil"),
    "sunrise": ("sunrise", None),
    "solar_noon": ("noon", None),
    "sunset": ("sunset", None),
    "dusk_civil": ("dusk", "civil"),
    "dusk_nautical": ("dusk", "nautical"),
    "dusk_astronomical": ("dusk", "astronomical"),
}
MIN_EVERY = timedelta(seconds=1)
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
DST_NOTE = (
    "# Daylight saving time: Celery beat's crontabs misbehave around DST changes (celery#1604).\n"
    "# chronod follows cronie: a fixed-time job whose time falls in the spring-forward gap runs\n"
    "# once right after the gap; one whose time happens twice in the autumn runs at the first;\n"
    "# jobs with '*' in the minute or hour follow real time. `chronod next` shows each case."
)


class LoadError(Exception):
    """The app could not be imported or has nothing to convert (one line, for the user)."""


@dataclass(frozen=True)
class Job:
    """One converted entry: its chronod name, TOML lines (comments included), and whether
    chronod fires at Celery's very instants (``exact``)."""

    entry: str
    name: str
    lines: tuple[str, ...]
    exact: bool


@dataclass(frozen=True)
class Refusal:
    entry: str
    reason: str


@dataclass(frozen=True)
class Conversion:
    target: str
    timezone: str
    jobs: tuple[Job, ...]
    refused: tuple[Refusal, ...]
    zone_note: str | None = None

    def toml(self) -> str:
        out = [
            f"# Converted by `chronod import celery {self.target}` from the app's beat_schedule.",
            "# Check it with `chronod check`; compare `chronod next` with what you expect. A",
            "# comment marks every entry whose meaning changes; refused entries are at the end.",
            "",
            "[chronod.celery]",
            f"app = {toml_value(self.target)}",
            "",
            "[defaults]",
            f"timezone = {toml_value(self.timezone)}",
        ]
        if self.zone_note:
            out.append(comment(self.zone_note))
        if self.timezone != "UTC" and any(j.exact for j in self.jobs):
            out += ["", DST_NOTE]
        for job in self.jobs:
            out += ["", *job.lines]
        for refusal in self.refused:
            out += [
                "",
                comment(f"REFUSED beat entry {toml_value(refusal.entry)}: {refusal.reason}"),
            ]
        return "\n".join(out) + "\n"


def load_app(target: str) -> Any:
    """``package.module:attr`` imported as ``celery -A`` would (the working directory first)."""
    module_name, _, path = target.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        value: Any = importlib.import_module(module_name)
        for part in (path or "app").split("."):
            value = getattr(value, part)
    except Exception as exc:
        raise LoadError(f"cannot import the Celery app {target}: {exc}") from exc
    return value


def convert(app: Any, target: str) -> Conversion:
    """Every entry of ``app.conf.beat_schedule``, converted or refused, in the order given."""
    schedule = app.conf.beat_schedule or {}
    if not schedule:
        raise LoadError(f"{target} has no beat_schedule entries: nothing to convert")
    zone, zone_note = app_zone(app)
    jobs: list[Job] = []
    refused: list[Refusal] = []
    taken: set[str] = set()
    for entry, body in schedule.items():
        name = job_name(str(entry), taken)
        try:
            jobs.append(convert_entry(str(entry), name, body))
        except Untranslatable as exc:
            refused.append(Refusal(str(entry), str(exc)))
            continue
        taken.add(name)
    return Conversion(target, zone, tuple(jobs), tuple(refused), zone_note)


def app_zone(app: Any) -> tuple[str, str | None]:
    name = app.conf.timezone
    if name is None:
        if app.conf.enable_utc is False:
            return "UTC", (
                "Celery ran these in the server's local time (enable_utc = False, no timezone): "
                "chronod never does; set the zone they are meant in"
            )
        return "UTC", None
    try:
        return get_zone(str(name)).name, None
    except UnknownZone:
        return "UTC", f"the app's timezone {name!r} is unknown to chronod's tz database: set one"


def job_name(entry: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", entry).strip("-_.")[:90] or "job"
    if not base[0].isalnum():
        base = f"j{base}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def convert_entry(entry: str, name: str, body: Mapping[str, Any]) -> Job:
    """One beat entry as a job; raise :class:`Untranslatable` with the reason if it has no form."""
    task = body.get("task")
    if not isinstance(task, str) or CELERY_TASK.match(task) is None:
        raise Untranslatable(f"task {task!r} is not a task name chronod can publish")
    schedule_lines, notes, exact = schedule_of(body.get("schedule"))
    option_lines, option_notes = options_of(body.get("options") or {})
    notes += option_notes
    if body.get("relative"):
        notes.append("Celery's relative=True (rounding to the interval) has no chronod form")
    lines = [f"# Celery beat entry {toml_value(entry)}"] if name != entry else []
    lines += [comment(note) for note in notes]
    lines += [f"[jobs.{name}]", *schedule_lines, f"celery = {toml_value(task)}"]
    for key in ("args", "kwargs"):
        value = body.get(key)
        if value:
            lines.append(f"{key} = {toml_value(list(value) if key == 'args' else dict(value))}")
    lines += option_lines
    return Job(entry, name, tuple(lines), exact)


def schedule_of(schedule: Any) -> tuple[list[str], list[str], bool]:
    """(TOML lines, comments, exact) for a Celery schedule."""
    from celery import schedules

    if isinstance(schedule, schedules.crontab):
        cron = translate(
            schedule.minute,
            schedule.hour,
            schedule.day_of_week,
            schedule.day_of_month,
            schedule.month_of_year,
        )
        notes = [cron.note] if cron.note else []
        return [f"cron = {toml_value(cron.expression)}"], notes, True
    if isinstance(schedule, schedules.solar):
        event, depression = SOLAR_EVENTS[schedule.event]
        lines = [
            f"solar = {toml_value(event)}",
            f"latitude = {toml_value(float(schedule.lat))}",
            f"longitude = {toml_value(float(schedule.lon))}",
        ]
        if depression:
            lines.append(f"depression = {toml_value(depression)}")
        note = (
            f"Celery solar {schedule.event!r}: chronod computes the same event per local day "
            "(within a minute of Celery's PyEphem), and skips days without it as Celery does"
        )
        return lines, [note], False
    if isinstance(schedule, schedules.schedule) and not isinstance(schedule, schedules.crontab):
        every = schedule.run_every
    elif isinstance(schedule, timedelta | int | float) and not isinstance(schedule, bool):
        every = schedule if isinstance(schedule, timedelta) else timedelta(seconds=schedule)
    else:
        raise Untranslatable(
            f"schedule {type(schedule).__name__} has no chronod form (crontab, solar, a "
            "timedelta or a number of seconds convert)"
        )
    note = (
        "Celery counts this interval from the task's last run (the phase moves with every "
        "restart of beat); chronod from its anchor (1970-01-01T00:00:00Z, or set anchor = …): "
        "the same period, at fixed instants"
    )
    return [f"every = {toml_value(duration(every))}"], [note], False


def options_of(options: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """TOML lines and comments for a beat entry's ``options``."""
    lines: list[str] = []
    notes: list[str] = []
    rest = dict(options)
    queue = rest.pop("queue", None)
    if queue is not None:
        if not isinstance(queue, str) or QUEUE_NAME.match(queue) is None:
            raise Untranslatable(f"queue {queue!r} is not a queue name chronod accepts")
        lines.append(f"queue = {toml_value(queue)}")
    expires = rest.pop("expires", None)
    if isinstance(expires, int | float) and not isinstance(expires, bool) and expires >= 0.1:
        lines.append(f"grace = {toml_value(duration(timedelta(seconds=expires)))}")
        notes.append(
            "Celery's expires became grace: a slot later than this is not run (and the "
            "message chronod publishes expires then)"
        )
    elif expires is not None:
        rest["expires"] = expires
    if rest:
        shown = ", ".join(f"{key}={value!r}" for key, value in sorted(rest.items()))
        notes.append(f"options chronod does not carry (set them in the app's routing): {shown}")
    return lines, notes


def duration(delta: timedelta) -> str:
    """``delta`` in chronod's duration syntax (``1h30m``), or refused."""
    if delta < MIN_EVERY:
        raise Untranslatable(f"an interval of {delta.total_seconds()} s: chronod's shortest is 1s")
    micros = delta // timedelta(microseconds=1)
    if micros % 1000:
        raise Untranslatable(f"an interval of {delta.total_seconds()} s is not whole milliseconds")
    millis = micros // 1000
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def comment(text: str) -> str:
    """``text`` as TOML comment lines of at most 100 characters."""
    return textwrap.fill(text, width=99, initial_indent="# ", subsequent_indent="# ")


def toml_value(value: Any) -> str:
    """``value`` written as TOML; raise :class:`Untranslatable` for what TOML cannot hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Untranslatable(f"{value!r} cannot be written in TOML")
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, once DEL (which TOML wants escaped) is.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Mapping):
        items = ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, Iterable):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise Untranslatable(
        f"{value!r} ({type(value).__name__}) cannot be written in TOML: args and kwargs must "
        "be JSON values without null"
    )


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else toml_value(key)
