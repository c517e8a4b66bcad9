"""``schedules.toml`` → frozen dataclasses, with every problem located in one pass.

Layout::

    [chronod]            # daemon settings: store, lease, namespace, workers, drain_timeout, …
    [defaults]           # any job key that makes sense for many jobs (timezone, queue, retries, …)
    [jobs.NAME]          # one table per job: exactly one schedule kind, exactly one of command/call

Syntax errors are reported as ``FILE:LINE:COL: message``; semantic ones as
``FILE: jobs.NAME.key: reason (got VALUE)``. :func:`load_config` raises :class:`ConfigError`
holding all
of them; it never returns a partially valid config.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast

from chronod.durations import parse_duration
from chronod.errors import ConfigError, ConfigIssue, ScheduleError, StoreConfigError
from chronod.instants import END_OF_TIME, FIRST_INSTANT, RANGE_TEXT, check_range
from chronod.schedules import IntervalSchedule, Schedule, WindowedSchedule
from chronod.schedules.cron import CronCache, CronSchedule
from chronod.schedules.interval import EPOCH
from chronod.schedules.solar import DEPRESSIONS, SolarSchedule
from chronod.schedules.solar import EVENTS as SOLAR_EVENTS
from chronod.store import check_store_url
from chronod.syntax import explain
from chronod.tz import UTC, UnknownZone, Zone, get_zone

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

Catchup = Literal["none", "latest", "all"]
Overlap = Literal["skip", "queue", "allow"]
JSONValue = Any

DEFAULT_CONFIG = "schedules.toml"
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
CALL_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
SCHEDULE_KINDS = ("every", "cron", "solar")
# Bounds on what a file may hold, so that every value `chronod check` accepts also works in
# `next`, the daemon, a reload and the web page (durations: chronod.durations.MAX_DURATION;
# instants: chronod.instants.check_range).
MAX_FILE_BYTES = 64 * 2**20  # 100,000 jobs take about 10 MiB
MAX_DEPTH = 32  # arrays and tables nested in the file, and in a job's args and kwargs
MAX_TEXT = 64 * 1024  # characters of any string, and of command, args, kwargs and env as a whole
_SHOWN = 60  # characters of a value quoted back in a message


# The one empty read-only mapping every job without kwargs or env shares (nothing can write it).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class DaemonConfig:
    """``[chronod]``: how the daemon and workers run; none of it affects which slots exist."""

    store: str | None = None
    lease: timedelta = timedelta(seconds=10)
    namespace: str = "chronod"
    workers: int | None = None  # None: one per CPU
    drain_timeout: timedelta = timedelta(seconds=30)
    attempt_lease: timedelta = timedelta(seconds=30)  # a run's attempt lease; heartbeat every third
    history: int = 100
    web_token: str | None = field(default=None, repr=False)
    replica_acks: int | None = None  # Redis WAIT; None: by the store URL's kind (docs/redis.md)


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """One ``[jobs.NAME]`` table with defaults applied and the schedule already built."""

    name: str
    schedule: Schedule
    timezone: str
    description: str = ""
    command: str | tuple[str, ...] | None = None
    call: str | None = None
    args: tuple[JSONValue, ...] = ()
    kwargs: Mapping[str, JSONValue] = field(default_factory=lambda: _EMPTY)
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    cwd: str | None = None
    queue: str = "default"
    timeout: timedelta = timedelta(hours=1)
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=30)
    kill_grace: timedelta = timedelta(seconds=10)
    grace: timedelta = timedelta(seconds=60)
    catchup: Catchup = "none"
    catchup_limit: int = 100
    overlap: Overlap = "skip"

    # Both identities are computed on first use and kept (cached_property writes the instance's
    # __dict__, which a frozen dataclass allows): the job is immutable, and each costs a JSON
    # encoding and a SHA-256, which add up over 100,000 jobs read by the scheduler, status and
    # metrics alike.
    @cached_property
    def fingerprint(self) -> str:
        """Identity of the schedule (which slots exist); changing it resets the job's state."""
        return self.schedule.fingerprint

    @cached_property
    def digest(self) -> str:
        """Identity of what a worker would execute; queue messages carry it (drift guard)."""
        text = json.dumps(self.execution(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def execution(self) -> dict[str, JSONValue]:
        """The fields that decide what a run executes and how; the source of :attr:`digest`."""
        command = list(self.command) if isinstance(self.command, tuple) else self.command
        return {
            "command": command,
            "call": self.call,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "env": dict(self.env),
            "cwd": self.cwd,
            "timeout_us": _micros(self.timeout),
            "kill_grace_us": _micros(self.kill_grace),
        }

    @property
    def kind(self) -> str:
        """``interval``, ``cron`` or ``solar``."""
        return str(self.schedule.canonical()["kind"])

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


@dataclass(frozen=True, kw_only=True)
class Config:
    path: Path
    daemon: DaemonConfig
    jobs: Mapping[str, JobConfig]

    @property
    def directory(self) -> Path:
        return self.path.parent


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------------
# Loading


def unused_queues(config: Config, queues: Iterable[str]) -> str | None:
    """A warning for ``chronod worker --queue`` names no job of ``config`` uses, else None.

    A pool on such a queue takes nothing, silently: most likely a typo, or a worker started with
    another host's config.
    """
    used = sorted({job.queue for job in config.jobs.values()})
    unused = [queue for queue in queues if queue not in used]
    if not unused:
        return None
    names = ", ".join(repr(queue) for queue in unused)
    return (
        f"no job in {config.path} uses queue {names}: this worker takes no runs from it "
        f"(queues in use: {', '.join(used) or 'none'})"
    )


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$CHRONOD_CONFIG``, else ``./schedules.toml``."""
    chosen = explicit or os.environ.get("CHRONOD_CONFIG") or DEFAULT_CONFIG
    return Path(chosen)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem found."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _file_error(file, "no such file") from None
    except IsADirectoryError:
        raise _file_error(file, "is a directory, not a schedules file") from None
    except OSError as exc:
        raise _file_error(file, f"cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // 2**20
        raise _file_error(file, f"larger than {limit} MiB; is this really a schedules file?")
    return parse_config(raw, file)


def _file_error(file: Path, reason: str) -> ConfigError:
    """A problem with the file as a whole: no location inside it, but the absolute path chronod
    looked at (a relative one depends on a working directory the reader may not know) and how to
    point it elsewhere."""
    return ConfigError(
        [
            ConfigIssue(
                file=str(file.absolute()),
                where="",
                message=f"{reason} (give the schedules file with --config PATH or CHRONOD_CONFIG)",
            )
        ]
    )


def parse_config(raw: bytes, file: Path) -> Config:
    name = str(file)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigIssue(file=name, where=f"{line}:1", message="not valid UTF-8", syntax=True)]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = explain(text, exc)
        raise ConfigError([_syntax(name, found.line, found.column, found.message)]) from None
    except RecursionError:
        # The parser recurses once per level of nested arrays and inline tables.
        line, column = _deepest(text, MAX_DEPTH)
        message = f"arrays and inline tables nested more than {MAX_DEPTH} levels deep"
        raise ConfigError([_syntax(name, line, column, message)]) from None
    except ValueError:
        # int() refuses numbers of more than 4300 digits (CVE-2020-10735) inside the parser.
        line, column = _huge_number(text)
        raise ConfigError([_syntax(name, line, column, "number too large")]) from None
    reader = _Reader(name)
    config = reader.config(data, file)
    if reader.issues:
        # A bad [defaults] value is found once per job that inherits it; report it once.
        raise ConfigError(list(dict.fromkeys(reader.issues)))
    return config


def _syntax(file: str, line: int, column: int, message: str) -> ConfigIssue:
    return ConfigIssue(file=file, where=f"{line}:{column}", message=message, syntax=True)


def _deepest(text: str, limit: int) -> tuple[int, int]:
    """Where arrays and inline tables first nest deeper than ``limit`` (line, column), skipping
    strings and comments; 1:1 if this rough reading finds no such place."""
    depth, pos, line, line_start = 0, 0, 1, 0
    while pos < len(text):
        char = text[pos]
        if char == "\n":
            line, line_start = line + 1, pos + 1
        elif char == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        elif char in "\"'":
            quote = text[pos : pos + 3] if text.startswith(char * 3, pos) else char
            end = pos + len(quote)
            while end < len(text) and not text.startswith(quote, end):
                if text[end] == "\n" and len(quote) == 1:
                    break  # a string cannot span lines: let the parser report it
                end += 2 if text[end] == "\\" and char == '"' else 1
            line += text.count("\n", pos, end)
            if "\n" in text[pos:end]:
                line_start = text.rfind("\n", pos, end) + 1
            pos = end + len(quote)
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line, pos - line_start + 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        pos += 1
    return 1, 1


def _huge_number(text: str) -> tuple[int, int]:
    match = re.search(r"[0-9_]{4000,}", text)
    if match is None:
        return 1, 1
    start = match.start()
    return text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)


# --------------------------------------------------------------------------------------------------
# Validation. _Reader collects issues instead of raising so that one pass reports all of them.

_T = TypeVar("_T")
_MISSING: Any = object()

DAEMON_KEYS = (
    "store",
    "lease",
    "namespace",
    "workers",
    "drain_timeout",
    "attempt_lease",
    "history",
    "web_token",
    "replica_acks",
)
# Keys that may be given once in [defaults] for every job.
DEFAULTABLE_KEYS = (
    "timezone",
    "queue",
    "timeout",
    "retries",
    "retry_delay",
    "kill_grace",
    "grace",
    "catchup",
    "catchup_limit",
    "overlap",
    "env",
    "cwd",
    "latitude",
    "longitude",
    "elevation",
    "depression",
)
JOB_ONLY_KEYS = (
    "description",
    "every",
    "anchor",
    "cron",
    "solar",
    "offset",
    "start",
    "end",
    "command",
    "call",
    "args",
    "kwargs",
)
JOB_KEYS = JOB_ONLY_KEYS + DEFAULTABLE_KEYS
SOLAR_KEYS = ("latitude", "longitude", "elevation", "depression", "offset")


class _Identities:
    """Fingerprints and digests of one load's jobs, computed once per distinct definition.

    Jobs that share a schedule object (:meth:`_Reader.shared`) share its fingerprint; jobs that
    run the same thing (the same command, no per-job arguments or environment) share a digest.
    Each is a JSON encoding and a SHA-256 (~30 µs): once per job, 100,000 jobs spent seconds on
    them before the first tick.
    """

    def __init__(self) -> None:
        self._fingerprints: dict[int, tuple[Schedule, str]] = {}
        self._digests: dict[tuple[Any, ...], str] = {}

    def remember(self, job: JobConfig) -> None:
        schedule = job.schedule
        known = self._fingerprints.get(id(schedule))
        if known is None or known[0] is not schedule:
            # Keyed by id() (schedules compare by identity anyway); the entry keeps the schedule
            # alive, so the id cannot be reused while it is here.
            known = self._fingerprints[id(schedule)] = (schedule, job.fingerprint)
        _prefill(job, "fingerprint", known[1])
        if job.args or job.kwargs or job.env:
            return  # per-job values: computed (once, lazily) from the job itself
        key = (job.command, job.call, job.cwd, job.timeout, job.kill_grace)
        digest = self._digests.get(key)
        if digest is None:
            digest = self._digests[key] = job.digest
        _prefill(job, "digest", digest)


def _prefill(job: JobConfig, name: str, value: str) -> None:
    # JobConfig's identities are cached_property values, kept in the instance __dict__ (a non-data
    # descriptor: the instance value wins); a frozen dataclass refuses setattr, so go round it,
    # as dataclasses' own __init__ does. The value is exactly what the property would compute.
    object.__setattr__(job, name, value)


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []
        # Per load, never kept between loads: schedules are immutable, so jobs with the same
        # definition share one object (and its tables, for cron), and identities computed once.
        self.crons = CronCache()
        self._schedules: dict[tuple[Any, ...], Schedule] = {}
        self._parsed: dict[tuple[Any, ...], Any] = {}
        self.identities = _Identities()

    def parsed(self, where: str, value: Any, parse: Callable[[Any], _T], kind: str) -> _T | None:
        """:meth:`get` for a pure ``parse`` named ``kind``: a value is parsed once per load.

        Thousands of jobs repeat the same values (``every = "1m"``, a shared ``start``); parsing
        them is most of what reading a job costs. Only successes are remembered, so every job
        with a bad value still reports it. The key holds the value's type: ``1``, ``1.0`` and
        ``true`` are equal in Python but not to the parsers.
        """
        if not isinstance(value, _SCALARS):
            return self.get(where, value, parse)
        key = (kind, type(value), value)
        if key in self._parsed:
            return cast("_T", self._parsed[key])
        result = self.get(where, value, parse)
        if result is not None:
            self._parsed[key] = result
        return result

    def shared(self, key: tuple[Any, ...], build: Callable[[], Schedule]) -> Schedule:
        """The schedule defined by ``key`` built once per load (``build`` may raise)."""
        found = self._schedules.get(key)
        if found is None:
            found = self._schedules[key] = build()
        return found

    # -- reporting ---------------------------------------------------------------------------------

    def error(self, where: str, reason: str, value: Any = _MISSING) -> None:
        if value is not _MISSING:
            reason = f"{reason} (got {_show(value)})"
        self.issues.append(ConfigIssue(file=self.file, where=where, message=reason))

    def unknown_keys(self, table: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        for key in table:
            if key in known:
                continue
            hint = difflib.get_close_matches(_clip(key), known, n=1, cutoff=0.6)
            extra = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(known)}"
            self.error(f"{prefix}{_clip(key)}", f"unknown key{extra}")

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.error(where, "expected a table", value)
            return {}
        return value

    # -- typed getters: return None (after recording an issue) on a bad value ---------------------

    def get(self, where: str, value: Any, parse: Callable[[Any], _T]) -> _T | None:
        if isinstance(value, str) and len(value) > MAX_TEXT:
            self.error(where, f"longer than {MAX_TEXT} characters", value)
            return None
        try:
            return parse(value)
        except (ValueError, TypeError, ScheduleError) as exc:
            self.error(where, str(exc), value)
            return None

    # -- sections ----------------------------------------------------------------------------------

    def config(self, data: dict[str, Any], file: Path) -> Config:
        self.unknown_keys(data, "", ("chronod", "defaults", "jobs"))
        daemon = self.daemon(self.table(data.get("chronod", _MISSING), "chronod"))
        defaults = self.table(data.get("defaults", _MISSING), "defaults")
        self.unknown_keys(defaults, "defaults.", DEFAULTABLE_KEYS)
        self.defaults(defaults)
        jobs_table = self.table(data.get("jobs", _MISSING), "jobs")
        if not jobs_table and "jobs" not in data:
            self.error("jobs", "no jobs defined; add a [jobs.NAME] table")
        jobs: dict[str, JobConfig] = {}
        for name, body in jobs_table.items():
            valid_name = JOB_NAME.match(name) is not None
            shown = name if valid_name else _clip(name)  # a bad one may be any length
            where = f"jobs.{shown}"
            if not valid_name:
                self.error(
                    where, "a job name uses letters, digits, '_', '.', '-' (at most 100)", name
                )
            # A bad name hides nothing else: the job's keys are checked all the same.
            job = self.job(shown, self.table(body, where), defaults)
            if job is not None and valid_name:
                jobs[name] = job
        return Config(path=file, daemon=daemon, jobs=MappingProxyType(jobs))

    def defaults(self, defaults: dict[str, Any]) -> None:
        """Each ``[defaults]`` value checked once, whether or not a job inherits it.

        A job that does inherit a bad one reports the very same issue, which is reported once.
        """
        for key, value in defaults.items():
            where = f"defaults.{key}"
            if key == "timezone":
                self.zone(where, value)
            elif key in _SIMPLE_JOB_KEYS:
                self.parsed(where, value, _SIMPLE_JOB_KEYS[key], key)
            elif key in _SOLAR_PARSERS:
                self.get(where, value, _SOLAR_PARSERS[key])

    def daemon(self, table: dict[str, Any]) -> DaemonConfig:
        self.unknown_keys(table, "chronod.", DAEMON_KEYS)
        values: dict[str, Any] = {}
        parsers: dict[str, Callable[[Any], Any]] = {
            "store": _string,
            "lease": _duration_at_least(timedelta(seconds=2)),
            "namespace": _matching(NAMESPACE, "letters, digits, '_', '.', ':', '-'"),
            "workers": _int_range(0, 1024),
            "drain_timeout": _duration_at_least(timedelta()),
            "attempt_lease": _duration_at_least(timedelta(seconds=1)),
            "history": _int_range(1, 100_000),
            "web_token": _string,
            "replica_acks": _int_range(0, 16),
        }
        if "store" in table:
            # Checked here so that 'chronod check' refuses what 'run' would; the message quotes
            # the URL redacted (never "got <value>": it may hold a password).
            try:
                check_store_url(_string(table["store"]))
            except (StoreConfigError, TypeError) as exc:
                self.error("chronod.store", str(exc))
        for key, parse in parsers.items():
            if key in table:
                parsed = self.get(f"chronod.{key}", table[key], parse)
                if parsed is not None:
                    values[key] = parsed
        return DaemonConfig(**values)

    def job(self, name: str, body: dict[str, Any], defaults: dict[str, Any]) -> JobConfig | None:
        prefix = f"jobs.{name}."
        self.unknown_keys(body, prefix, JOB_KEYS)
        before = len(self.issues)

        def where(key: str) -> str:
            return f"{prefix}{key}" if key in body else f"defaults.{key}"

        def pick(key: str) -> Any:
            return body.get(key, defaults.get(key, _MISSING))

        zone = self.zone(
            where("timezone")
            if "timezone" in body or "timezone" in defaults
            else prefix + "timezone",
            pick("timezone"),
        )
        schedule = self.schedule(name, body, pick, where, zone)
        values: dict[str, Any] = {}
        self.execution(name, body, values)
        for key, parse in _SIMPLE_JOB_KEYS.items():
            value = pick(key)
            if value is not _MISSING:
                parsed = self.parsed(where(key), value, parse, key)
                if parsed is not None:
                    values[key] = parsed
        if len(self.issues) > before or schedule is None or zone is None:
            return None
        job = JobConfig(name=name, schedule=schedule, timezone=zone.name, **values)
        self.identities.remember(job)
        return job

    def zone(self, where: str, value: Any) -> Zone | None:
        if value is _MISSING:
            self.error(
                where,
                "required: set 'timezone' on the job or in [defaults] "
                "(the server's local time is never used)",
            )
            return None
        if not isinstance(value, str):
            self.error(where, "expected an IANA zone name like 'Europe/Berlin'", value)
            return None
        try:
            return get_zone(value)
        except UnknownZone:
            hint = difflib.get_close_matches(value, _zone_names(), n=1, cutoff=0.7)
            reason = "unknown time zone" + (f"; did you mean '{hint[0]}'?" if hint else "")
            self.error(where, reason, value)
            return None

    def schedule(
        self,
        name: str,
        body: dict[str, Any],
        pick: Callable[[str], Any],
        where: Callable[[str], str],
        zone: Zone | None,
    ) -> Schedule | None:
        prefix = f"jobs.{name}"
        # A bad zone hides no other mistake: the values are read in UTC, only to be checked.
        checking = zone or get_zone("UTC")
        start = self.instant(where("start"), pick("start"), checking)
        end = self.instant(where("end"), pick("end"), checking)
        if start is not None and end is not None and end < start and zone is not None:
            self.error(f"{prefix}.end", "ends before 'start'", body.get("end"))
        kinds = [kind for kind in SCHEDULE_KINDS if kind in body]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            self.error(
                prefix, f"needs exactly one schedule: 'every', 'cron' or 'solar' (found {found})"
            )
            for kind in kinds:
                self.schedule_value(prefix, kind, body[kind])
            return None
        kind = kinds[0]
        misplaced = [k for k in SOLAR_KEYS if k in body and kind != "solar"]
        misplaced += ["anchor"] if "anchor" in body and kind != "every" else []
        for key in misplaced:
            self.error(
                f"{prefix}.{key}",
                f"only applies to {'every' if key == 'anchor' else 'solar'} "
                f"schedules, this job uses '{kind}'",
            )
        built: Schedule | None
        if kind == "every":
            built = self.interval(prefix, body, checking)
        elif kind == "cron":
            built = self.get(
                f"{prefix}.cron",
                body["cron"],
                lambda v: CronSchedule.cached(_string(v), checking, self.crons),
            )
        else:
            built = self.solar(prefix, pick, where, checking)
        if built is None or zone is None:
            return None
        if start is None and end is None:
            return built
        return self.shared(
            ("window", built, start, end), lambda: WindowedSchedule(built, start, end)
        )

    def schedule_value(self, prefix: str, kind: str, value: Any) -> None:
        """Check the value of one schedule kind of a job that names several."""
        if kind == "every":
            self.parsed(f"{prefix}.every", value, _EVERY, "every")
        elif kind == "cron":
            self.get(f"{prefix}.cron", value, lambda v: self.crons.tables(_string(v)))
        else:
            self.get(f"{prefix}.solar", value, _choice(SOLAR_EVENTS))

    def interval(self, prefix: str, body: dict[str, Any], zone: Zone) -> Schedule | None:
        every = self.parsed(f"{prefix}.every", body["every"], _EVERY, "every")
        anchor = EPOCH
        if "anchor" in body:
            anchor = self.instant(f"{prefix}.anchor", body["anchor"], zone) or EPOCH
        if every is None:
            return None
        return self.get(
            f"{prefix}.every",
            body["every"],
            lambda _: self.shared(
                ("every", every, zone.name, anchor), lambda: IntervalSchedule(every, zone, anchor)
            ),
        )

    def solar(
        self, prefix: str, pick: Callable[[str], Any], where: Callable[[str], str], zone: Zone
    ) -> Schedule | None:
        event = self.get(f"{prefix}.solar", pick("solar"), _choice(SOLAR_EVENTS))
        coords: dict[str, float | None] = {}
        for key in ("latitude", "longitude"):
            value = pick(key)
            if value is _MISSING:
                self.error(
                    f"{prefix}.{key}", "required for solar schedules (on the job or in [defaults])"
                )
                coords[key] = None
            else:
                coords[key] = self.get(where(key), value, _SOLAR_PARSERS[key])
        elevation = 0.0
        if pick("elevation") is not _MISSING:
            elevation = (
                self.get(where("elevation"), pick("elevation"), _SOLAR_PARSERS["elevation"]) or 0.0
            )
        depression = DEPRESSIONS["civil"]
        if pick("depression") is not _MISSING:
            depression = (
                self.get(where("depression"), pick("depression"), _SOLAR_PARSERS["depression"])
                or depression
            )
        offset = timedelta()
        if pick("offset") is not _MISSING:
            offset = self.get(where("offset"), pick("offset"), _signed_duration) or offset
        lat, lon = coords["latitude"], coords["longitude"]
        if event is None or lat is None or lon is None:
            return None
        definition = ("solar", event, lat, lon, zone.name, elevation, depression, offset)
        return self.get(
            f"{prefix}.solar",
            event,
            lambda ev: self.shared(
                definition,
                lambda: SolarSchedule(
                    event=ev,
                    latitude=lat,
                    longitude=lon,
                    zone=zone,
                    elevation=elevation,
                    depression=depression,
                    offset=offset,
                ),
            ),
        )

    def instant(self, where: str, value: Any, zone: Zone) -> datetime | None:
        if value is _MISSING:
            return None
        return self.parsed(where, value, lambda v: parse_instant(v, zone), f"instant {zone.name}")

    def execution(self, name: str, body: dict[str, Any], values: dict[str, Any]) -> None:
        prefix = f"jobs.{name}."
        targets = [key for key in ("command", "call") if key in body]
        if len(targets) != 1:
            found = " and ".join(targets) if targets else "neither"
            self.error(f"jobs.{name}", f"needs exactly one of 'command' or 'call' (found {found})")
        if "command" in body:
            command = self.get(prefix + "command", body["command"], _command)
            if command is not None:
                values["command"] = command
        if "call" in body:
            call = self.get(
                prefix + "call", body["call"], _matching(CALL_TARGET, "'package.module:function'")
            )
            if call is not None:
                values["call"] = call
        for key in ("args", "kwargs"):
            if key in body and "call" not in body:
                self.error(prefix + key, "only applies to 'call' jobs")
        if "args" in body:
            args = self.get(prefix + "args", body["args"], _json_list)
            if args is not None:
                values["args"] = args
        if "kwargs" in body:
            kwargs = self.get(prefix + "kwargs", body["kwargs"], _json_table)
            if kwargs is not None:
                values["kwargs"] = kwargs


# --------------------------------------------------------------------------------------------------
# Value parsers: each raises ValueError/TypeError with the reason shown to the user.


def _show(value: Any) -> str:
    """``value`` as quoted back in a message: JSON, cut short (it may be 64 MiB or 1,000 deep)."""
    if isinstance(value, str):
        return json.dumps(_clip(value), ensure_ascii=False)
    try:
        return _clip(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError):
        return f"a {type(value).__name__}"


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _zone_names() -> list[str]:
    from chronod.tz import zone_names

    return zone_names()


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(f"expected {what}")
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[Any], Any]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError("expected one of " + ", ".join(f"'{o}'" for o in options))
        return cast(str, value)

    return parse


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[Any], float]:
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


def _duration_at_least(minimum: timedelta) -> Callable[[Any], timedelta]:
    def parse(value: Any) -> timedelta:
        parsed = _duration(value)
        if parsed < minimum:
            raise ValueError(f"must be at least {minimum.total_seconds():g}s")
        return parsed

    return parse


def _signed_duration(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise TypeError('expected a signed duration like "-30m" or "+1h"')
    return parse_duration(value, signed=True)


def _depression(value: Any) -> float:
    if isinstance(value, str):
        if value not in DEPRESSIONS:
            raise ValueError(
                "expected 'civil', 'nautical', 'astronomical' or degrees below the horizon"
            )
        return DEPRESSIONS[value]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 90:
        raise ValueError("expected 'civil', 'nautical', 'astronomical' or degrees from 0 to 90")
    return float(value)


def _env(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TypeError("expected a table of string values")
    for name, text in value.items():
        if not name or "=" in name or "\0" in name or "\0" in text:
            raise ValueError(
                f"{_show(name)}: a variable name is not empty and has no '=', and neither name "
                "nor value has a NUL character"
            )
    _within(sum(len(k) + len(v) for k, v in value.items()), "the variables")
    return MappingProxyType(dict(value))


def _command(value: Any) -> str | tuple[str, ...]:
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


def _path(value: Any) -> str:
    _no_nul(_string(value))
    return cast(str, value)


def _no_nul(text: str) -> None:
    # The kernel takes C strings: exec() refuses one with a NUL in it, at run time.
    if "\0" in text:
        raise ValueError("must not contain a NUL character (\\u0000)")


def _within(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise ValueError(f"{what} take more than {MAX_TEXT} characters")


def _json_list(value: Any) -> tuple[JSONValue, ...]:
    if not isinstance(value, list):
        raise TypeError("expected an array")
    _require_json(value)
    return tuple(value)


def _json_table(value: Any) -> Mapping[str, JSONValue]:
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


_EVERY = _duration_at_least(timedelta(seconds=1))
# Values _Reader.parsed remembers (immutable and hashable; what TOML gives besides arrays/tables).
_SCALARS = (str, int, float, date, time)

# Keys read the same way on every job (after [defaults]), with their parsers.
_SIMPLE_JOB_KEYS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {
        "description": _string,
        "queue": _matching(QUEUE_NAME, "letters, digits, '_', '.', '-'"),
        "timeout": _duration_at_least(timedelta(seconds=1)),
        "retries": _int_range(0, 100),
        "retry_delay": _duration_at_least(timedelta()),
        "kill_grace": _duration_at_least(timedelta()),
        # A dispatch is always some milliseconds late: with grace 0 every slot would be missed.
        "grace": _duration_at_least(MIN_GRACE),
        "catchup": _choice(("none", "latest", "all")),
        "catchup_limit": _int_range(1, 100_000),
        "overlap": _choice(("skip", "queue", "allow")),
        "env": _env,
        "cwd": _path,
    }
)
# Solar keys that [defaults] may hold, with their parsers.
_SOLAR_PARSERS: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {
        "latitude": _float_range(-90.0, 90.0),
        "longitude": _float_range(-180.0, 180.0),
        "elevation": _float_range(-500.0, 9000.0),
        "depression": _depression,
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
