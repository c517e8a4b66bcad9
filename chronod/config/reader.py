"""The checks of ``schedules.toml`` after its syntax: every key, value and combination, located.

:class:`Reader` collects a :class:`ConfigIssue` for each problem instead of raising, so that one
pass reports all of them, and a mistake never hides another (docs/config.md): a bad zone still
lets the schedule be checked (in UTC), a bad job name still lets the job's keys be checked, a
value in ``[defaults]`` is checked whether or not a job inherits it.

What the jobs of the load repeat is parsed and built once (:mod:`chronod.config.shared`); the
checks here do not depend on that.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from chronod.alerts.model import Channel, JobAlerts
from chronod.alerts.settings import check_smtp, read_channels, read_job_alerts
from chronod.config import chains, dates, parsers
from chronod.config.model import CeleryConfig, Config, DaemonConfig, JobConfig
from chronod.config.parsers import MAX_TEXT, clip, show
from chronod.config.shared import Shared
from chronod.errors import ConfigIssue, ScheduleError, StoreConfigError
from chronod.schedules import IntervalSchedule, Schedule, WindowedSchedule
from chronod.schedules.cron import CronSchedule
from chronod.schedules.exclude import ExcludedSchedule
from chronod.schedules.interval import EPOCH
from chronod.schedules.jitter import JitteredSchedule
from chronod.schedules.solar import DEPRESSIONS, SolarSchedule
from chronod.schedules.solar import EVENTS as SOLAR_EVENTS
from chronod.store import check_store_url
from chronod.tz import UnknownZone, Zone, get_zone, zone_names

_T = TypeVar("_T")
_MISSING: Any = object()

SCHEDULE_KINDS = ("every", "cron", "solar", "at", "after")
DAEMON_KEYS = (*parsers.DAEMON_PARSERS, "smtp", "from", "celery")  # smtp, from: chronod.alerts
CELERY_KEYS = ("broker", "app")
TARGETS = ("command", "call", "celery")
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
    "exclude",
    "exclude_file",
    "jitter",
    "notify",
    "notify_on",
    "notify_every",
)
ALERT_KEYS = ("notify", "notify_on", "notify_every", "ping")
JOB_ONLY_KEYS = (
    "description",
    "every",
    "anchor",
    "cron",
    "solar",
    "at",
    "after",
    "when",
    "offset",
    "start",
    "end",
    "command",
    "call",
    "celery",
    "args",
    "kwargs",
    "ping",
)
JOB_KEYS = JOB_ONLY_KEYS + DEFAULTABLE_KEYS
SOLAR_KEYS = ("latitude", "longitude", "elevation", "depression", "offset")


@dataclass(frozen=True)
class _Table:
    """One ``[jobs.NAME]`` table and the ``[defaults]`` it inherits from."""

    name: str
    body: dict[str, Any]
    defaults: dict[str, Any]

    @property
    def path(self) -> str:
        return f"jobs.{self.name}"

    def key(self, key: str) -> str:
        return f"jobs.{self.name}.{key}"

    def where(self, key: str) -> str:
        """Where the job's value of ``key`` was written: on the job, else in ``[defaults]``."""
        return self.key(key) if key in self.body else f"defaults.{key}"

    def pick(self, key: str) -> Any:
        return self.body.get(key, self.defaults.get(key, _MISSING))


class Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []
        self.shared = Shared()
        self.channels: Mapping[str, Channel] = MappingProxyType({})
        self.declared: frozenset[str] = frozenset()
        self.files: dict[Path, None] = {}  # exclude files named, in order (Config.extra_files)

    # -- reporting ---------------------------------------------------------------------------------

    def error(self, where: str, reason: str, value: Any = _MISSING) -> None:
        if value is not _MISSING:
            reason = f"{reason} (got {show(value)})"
        self.issues.append(ConfigIssue(file=self.file, where=where, message=reason))

    def unknown_keys(self, table: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        for key in table:
            if key in known:
                continue
            hint = difflib.get_close_matches(clip(key), known, n=1, cutoff=0.6)
            extra = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(known)}"
            self.error(f"{prefix}{clip(key)}", f"unknown key{extra}")

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

    def parsed(self, where: str, value: Any, parse: Callable[[Any], _T], kind: str) -> _T | None:
        """:meth:`get` for a pure ``parse`` named ``kind``, whose successes the load shares."""
        return self.shared.value(kind, value, lambda: self.get(where, value, parse))

    # -- sections ----------------------------------------------------------------------------------

    def config(self, data: dict[str, Any], file: Path) -> Config:
        self.unknown_keys(data, "", ("chronod", "defaults", "jobs", "notify"))
        daemon = self.daemon(self.table(data.get("chronod", _MISSING), "chronod"))
        self.notify(self.table(data.get("notify", _MISSING), "notify"), daemon)
        defaults = self.table(data.get("defaults", _MISSING), "defaults")
        self.unknown_keys(defaults, "defaults.", DEFAULTABLE_KEYS)
        self.defaults(defaults)
        jobs_table = self.table(data.get("jobs", _MISSING), "jobs")
        if not jobs_table and "jobs" not in data:
            self.error("jobs", "no jobs defined; add a [jobs.NAME] table")
        jobs: dict[str, JobConfig] = {}
        for name, body in jobs_table.items():
            valid_name = parsers.JOB_NAME.match(name) is not None
            shown = name if valid_name else clip(name)  # a bad one may be any length
            where = f"jobs.{shown}"
            if not valid_name:
                self.error(
                    where, "a job name uses letters, digits, '_', '.', '-' (at most 100)", name
                )
            # A bad name hides nothing else: the job's keys are checked all the same.
            job = self.job(_Table(shown, self.table(body, where), defaults))
            if job is not None and valid_name:
                jobs[name] = job
        chains.check_links(jobs_table, self.error)  # over the whole file: names and cycles
        # From the tables, so that a celery job with another mistake still needs the table.
        celery_jobs = [
            clip(name)
            for name, body in jobs_table.items()
            if isinstance(body, dict) and "celery" in body
        ]
        daemon_table = data.get("chronod")
        given = isinstance(daemon_table, dict) and "celery" in daemon_table  # bad: reported there
        if celery_jobs and not given:
            self.error(
                "chronod.celery",
                f"required by celery jobs ({', '.join(celery_jobs[:3])}): add a [chronod.celery] "
                "table with broker = URL or app = 'package.module:app'",
            )
        return Config(
            path=file,
            daemon=daemon,
            jobs=MappingProxyType(jobs),
            channels=self.channels,
            extra_files=tuple(self.files),
        )

    def notify(self, table: dict[str, Any], daemon: DaemonConfig) -> None:
        """The ``[notify.NAME]`` channels (chronod.alerts), kept for the jobs that name them."""
        self.declared = frozenset(table)
        self.channels = MappingProxyType(
            read_channels(table, self.error, smtp=daemon.smtp, sender=daemon.mail_from)
        )

    def alerts(self, job: _Table) -> JobAlerts | None:
        """The job's notification settings; None after reporting a bad one."""
        if not any(key in job.body or key in job.defaults for key in ALERT_KEYS):
            return JobAlerts()
        return read_job_alerts(
            lambda key: None if job.pick(key) is _MISSING else job.pick(key),
            job.where,
            self.channels,
            self.error,
            declared=self.declared.__contains__,
        )

    def defaults(self, defaults: dict[str, Any]) -> None:
        """Each ``[defaults]`` value checked once, whether or not a job inherits it.

        A job that does inherit a bad one reports the very same issue, which is reported once.
        """
        for key, value in defaults.items():
            where = f"defaults.{key}"
            if key == "timezone":
                self.zone(where, value)
            elif key in parsers.SIMPLE_JOB_KEYS:
                self.parsed(where, value, parsers.SIMPLE_JOB_KEYS[key], key)
            elif key in parsers.SOLAR_PARSERS:
                self.get(where, value, parsers.SOLAR_PARSERS[key])
            elif key == "exclude":
                self.get(where, value, dates.exclude_list)
            elif key == "exclude_file":
                self.exclude_file(where, value)
            elif key == "jitter":
                self.get(where, value, parsers.JITTER)
        if any(key in defaults for key in ALERT_KEYS):
            read_job_alerts(
                defaults.get,
                lambda key: f"defaults.{key}",
                self.channels,
                self.error,
                declared=self.declared.__contains__,
            )

    def daemon(self, table: dict[str, Any]) -> DaemonConfig:
        self.unknown_keys(table, "chronod.", DAEMON_KEYS)
        values: dict[str, Any] = {}
        smtp, sender = check_smtp(table, self.error)
        values.update(smtp=smtp, mail_from=sender)
        if "store" in table:
            # Checked here so that 'chronod check' refuses what 'run' would; the message quotes
            # the URL redacted (never "got <value>": it may hold a password).
            try:
                check_store_url(parsers.string(table["store"]))
            except (StoreConfigError, TypeError) as exc:
                self.error("chronod.store", str(exc))
        for key, parse in parsers.DAEMON_PARSERS.items():
            if key in table:
                parsed = self.get(f"chronod.{key}", table[key], parse)
                if parsed is not None:
                    values[key] = parsed
        if "celery" in table:
            values["celery"] = self.celery(self.table(table["celery"], "chronod.celery"))
        return DaemonConfig(**values)

    def celery(self, table: dict[str, Any]) -> CeleryConfig | None:
        """``[chronod.celery]``: exactly one of ``broker`` and ``app``."""
        self.unknown_keys(table, "chronod.celery.", CELERY_KEYS)
        given = [key for key in CELERY_KEYS if key in table]
        if len(given) != 1:
            found = " and ".join(given) if given else "neither"
            self.error("chronod.celery", f"needs exactly one of 'broker' or 'app' (found {found})")
            return None
        if "broker" in table:
            # Never "got <value>": a broker URL may hold a password.
            value = table["broker"]
            if not isinstance(value, str) or parsers.BROKER_URL.match(value) is None:
                self.error("chronod.celery.broker", "expected a broker URL like 'redis://HOST/0'")
                return None
            return CeleryConfig(broker=value)
        target = parsers.matching(parsers.CALL_TARGET, "'package.module:app'")
        app = self.get("chronod.celery.app", table["app"], target)
        return None if app is None else CeleryConfig(app=app)

    def job(self, job: _Table) -> JobConfig | None:
        self.unknown_keys(job.body, f"{job.path}.", JOB_KEYS)
        before = len(self.issues)
        inherited = "timezone" in job.body or "timezone" in job.defaults
        zone = self.zone(
            job.where("timezone") if inherited else job.key("timezone"), job.pick("timezone")
        )
        schedule = self.schedule(job, zone)
        values: dict[str, Any] = {}
        self.execution(job, values)
        for key, parse in parsers.SIMPLE_JOB_KEYS.items():
            value = job.pick(key)
            if value is not _MISSING:
                parsed = self.parsed(job.where(key), value, parse, key)
                if parsed is not None:
                    values[key] = parsed
        alerts = self.alerts(job)
        if alerts is not None:
            values["alerts"] = alerts
        if len(self.issues) > before or schedule is None or zone is None:
            return None
        return JobConfig(
            name=job.name,
            schedule=schedule,
            timezone=zone.name,
            digests=self.shared.digests,
            **values,
        )

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
            hint = difflib.get_close_matches(value, zone_names(), n=1, cutoff=0.7)
            reason = "unknown time zone" + (f"; did you mean '{hint[0]}'?" if hint else "")
            self.error(where, reason, value)
            return None

    # -- the schedule ------------------------------------------------------------------------------

    def schedule(self, job: _Table, zone: Zone | None) -> Schedule | None:
        # A bad zone hides no other mistake: the values are read in UTC, only to be checked.
        checking = zone or get_zone("UTC")
        start, end = self.window(job, zone, checking)
        excluded = self.excluded(job)
        jitter = self.optional(job, "jitter", parsers.JITTER, None)
        kind = self.kind(job)
        if kind == "after":
            return chains.after_schedule(job.body, job.key, zone, self.get, self.error)
        if kind is None:
            return None
        built = self.build(kind, job, checking)
        if built is None or zone is None or excluded is None:
            return None
        key, sources = excluded
        if sources:
            inner = built
            # Keyed by the values as written: a holiday file in [defaults] is one key for all
            # jobs, and the dates are merged once (list labels win over the file's).
            built = self.shared.schedule(
                ("exclude", inner, key),
                lambda: ExcludedSchedule(inner, _merged(sources)),
            )
        if start is not None or end is not None:
            unbounded = built
            built = self.shared.schedule(
                ("window", unbounded, start, end), lambda: WindowedSchedule(unbounded, start, end)
            )
        # Outermost, and never shared: the delays depend on the job's name.
        return built if jitter is None else JitteredSchedule(built, job.name, jitter)

    def excluded(self, job: _Table) -> tuple[tuple[Any, ...], list[Mapping[date, str]]] | None:
        """The job's excluded dates from ``exclude`` and ``exclude_file`` (each labelled with where
        it was given), ``exclude`` first, with the values as written (a key for sharing); None
        after reporting a bad one."""
        key: list[Any] = []
        sources: list[Mapping[date, str]] = []
        ok = True
        for name in ("exclude", "exclude_file"):
            value = job.pick(name)
            if value is _MISSING:
                key.append(None)
                continue
            if name == "exclude":
                listed = self.get(job.where(name), value, dates.exclude_list)
                key.append(tuple(value) if listed is not None else None)  # dates and strings
            else:
                listed = self.exclude_file(job.where(name), value)
                key.append(value)
            if listed is None:
                ok = False
            elif listed:
                sources.append(listed)
        if sum(len(each) for each in sources) > dates.MAX_DATES:
            self.error(job.path, f"excludes more than {dates.MAX_DATES} dates in all")
            return None
        return (tuple(key), sources) if ok else None

    def exclude_file(self, where: str, value: Any) -> Mapping[date, str] | None:
        # Read once per load: a holiday file in [defaults] serves every job.
        directory = Path(self.file).parent
        if isinstance(value, str) and value.strip():
            self.files[directory / value] = None  # watched even while missing or bad
        return self.parsed(where, value, lambda v: dates.exclude_file(v, directory), "exclude_file")

    def window(
        self, job: _Table, zone: Zone | None, checking: Zone
    ) -> tuple[datetime | None, datetime | None]:
        """``start`` and ``end``, each None when absent or bad."""
        start = self.instant(job.where("start"), job.pick("start"), checking)
        end = self.instant(job.where("end"), job.pick("end"), checking)
        if start is not None and end is not None and end < start and zone is not None:
            self.error(job.key("end"), "ends before 'start'", job.body.get("end"))
        return start, end

    def kind(self, job: _Table) -> str | None:
        """The job's one schedule kind; None after reporting none or several (whose values are
        checked all the same). Keys of another kind are reported."""
        kinds = [kind for kind in SCHEDULE_KINDS if kind in job.body]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            self.error(
                job.path,
                "needs exactly one schedule: 'every', 'cron', 'solar', 'at' or 'after' "
                f"(found {found})",
            )
            for kind in kinds:
                self.schedule_value(job.path, kind, job.body[kind])
            return None
        kind = kinds[0]
        misplaced = [k for k in SOLAR_KEYS if k in job.body and kind != "solar"]
        misplaced += ["anchor"] if "anchor" in job.body and kind != "every" else []
        if "when" in job.body and kind != "after":
            self.error(
                job.key("when"), f"only applies to jobs with 'after', this job uses '{kind}'"
            )
        for key in misplaced:
            self.error(
                job.key(key),
                f"only applies to {'every' if key == 'anchor' else 'solar'} "
                f"schedules, this job uses '{kind}'",
            )
        return kind

    def build(self, kind: str, job: _Table, zone: Zone) -> Schedule | None:
        if kind == "every":
            return self.interval(job, zone)
        if kind == "cron":
            crons = self.shared.crons
            return self.get(
                job.key("cron"),
                job.body["cron"],
                lambda v: CronSchedule.cached(parsers.string(v), zone, crons),
            )
        if kind == "at":
            return self.get(job.key("at"), job.body["at"], lambda v: dates.at_schedule(v, zone))
        return self.solar(job, zone)

    def schedule_value(self, prefix: str, kind: str, value: Any) -> None:
        """Check the value of one schedule kind of a job that names several."""
        if kind == "every":
            self.parsed(f"{prefix}.every", value, parsers.EVERY, "every")
        elif kind == "cron":
            self.get(f"{prefix}.cron", value, lambda v: self.shared.crons.tables(parsers.string(v)))
        elif kind == "at":
            self.get(f"{prefix}.at", value, lambda v: dates.at_schedule(v, get_zone("UTC")))
        elif kind == "after":
            self.get(f"{prefix}.after", value, chains.parse_after)
        else:
            self.get(f"{prefix}.solar", value, parsers.choice(SOLAR_EVENTS))

    def interval(self, job: _Table, zone: Zone) -> Schedule | None:
        every = self.parsed(job.key("every"), job.body["every"], parsers.EVERY, "every")
        anchor = EPOCH
        if "anchor" in job.body:
            anchor = self.instant(job.key("anchor"), job.body["anchor"], zone) or EPOCH
        if every is None:
            return None
        return self.get(
            job.key("every"),
            job.body["every"],
            lambda _: self.shared.schedule(
                ("every", every, zone.name, anchor), lambda: IntervalSchedule(every, zone, anchor)
            ),
        )

    def solar(self, job: _Table, zone: Zone) -> Schedule | None:
        event = self.get(job.key("solar"), job.pick("solar"), parsers.choice(SOLAR_EVENTS))
        coords: dict[str, float | None] = {}
        for key in ("latitude", "longitude"):
            value = job.pick(key)
            if value is _MISSING:
                self.error(
                    job.key(key), "required for solar schedules (on the job or in [defaults])"
                )
                coords[key] = None
            else:
                coords[key] = self.get(job.where(key), value, parsers.SOLAR_PARSERS[key])
        elevation = self.optional(job, "elevation", parsers.SOLAR_PARSERS["elevation"], 0.0)
        depression = self.optional(
            job, "depression", parsers.SOLAR_PARSERS["depression"], DEPRESSIONS["civil"]
        )
        offset = self.optional(job, "offset", parsers.signed_duration, timedelta())
        lat, lon = coords["latitude"], coords["longitude"]
        if event is None or lat is None or lon is None:
            return None
        definition = ("solar", event, lat, lon, zone.name, elevation, depression, offset)
        return self.get(
            job.key("solar"),
            event,
            lambda ev: self.shared.schedule(
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

    def optional(self, job: _Table, key: str, parse: Callable[[Any], _T], default: _T) -> _T:
        """The job's (or ``[defaults]``') ``key``; ``default`` when absent, or bad (reported)."""
        value = job.pick(key)
        if value is _MISSING:
            return default
        found = self.get(job.where(key), value, parse)
        return default if found is None else found

    def instant(self, where: str, value: Any, zone: Zone) -> datetime | None:
        if value is _MISSING:
            return None
        return self.parsed(
            where, value, lambda v: parsers.parse_instant(v, zone), f"instant {zone.name}"
        )

    # -- what runs ---------------------------------------------------------------------------------

    def execution(self, job: _Table, values: dict[str, Any]) -> None:
        body = job.body
        targets = [key for key in TARGETS if key in body]
        if len(targets) != 1:
            found = " and ".join(targets) if targets else "none"
            self.error(
                job.path, f"needs exactly one of 'command', 'call' or 'celery' (found {found})"
            )
        if "celery" in body:
            self.celery_target(job, values)
        for key in ("args", "kwargs"):
            if key in body and "call" not in body and "celery" not in body:
                self.error(job.key(key), "only applies to 'call' and 'celery' jobs")
        call = parsers.matching(parsers.CALL_TARGET, "'package.module:function'")
        simple = (
            ("command", parsers.command),
            ("call", call),
            ("args", parsers.json_list),
            ("kwargs", parsers.json_table),
        )
        for key, parse in simple:
            if key in body:
                parsed = self.get(job.key(key), body[key], parse)
                if parsed is not None:
                    values[key] = parsed

    def celery_target(self, job: _Table, values: dict[str, Any]) -> None:
        """A ``celery`` job: the task name; its own ``queue`` is also the Celery queue."""
        name = self.get(
            job.key("celery"),
            job.body["celery"],
            parsers.matching(parsers.CELERY_TASK, "a Celery task name like 'proj.tasks.digest'"),
        )
        if name is not None:
            values["celery"] = name
        if "queue" in job.body:
            values["celery_queue"] = job.body["queue"]  # checked with the other simple keys
        for key in ("env", "cwd"):
            if key in job.body:
                # The task runs in the Celery worker's environment, not in a process of chronod's.
                self.error(job.key(key), "only applies to 'command' and 'call' jobs")


def _merged(sources: list[Mapping[date, str]]) -> dict[date, str]:
    """One mapping of dates; where a date is in several, the first source's label wins."""
    merged: dict[date, str] = {}
    for each in reversed(sources):
        merged.update(each)
    return merged
