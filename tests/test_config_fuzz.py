"""Fuzzing the config path: whatever the file holds, `check` either refuses it with ConfigError or
accepts a config that every consumer can use.

Two sources of documents: TOML generated from the config's own vocabulary (keys, and values that
are near the edges: huge durations and numbers, instants at the ends of the calendar, deep
nesting), and random edits of the example ``schedules.toml``. For each one, as a user and the
daemon would meet it:

* ``check``: :func:`load_config` raises nothing but :class:`ConfigError`;
* ``next``: the preview of every job (:mod:`chronod.preview`) and its metrics period;
* a reload of a running leader: :func:`reload_config`, then :meth:`Scheduler.load` and a tick on
  a SQLite store under a manual clock;
* the web page's JSON for the jobs and the timeline: no answer is a 500.

Bounded in time: the example counts keep both tests under about ten seconds.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.clock import ManualClock
from chronod.config import DAEMON_KEYS, DEFAULTABLE_KEYS, JOB_KEYS, Config, load_config
from chronod.dispatch import Scheduler, guard_ttl, plan_slots
from chronod.errors import ConfigError
from chronod.metrics import job_period
from chronod.preview import as_json, local_text, relative_text, upcoming
from chronod.runtime import reload_config
from chronod.store.base import Lease
from chronod.store.sqlite import SQLiteStore
from chronod.tz import UTC
from chronod.web.app import ConfigSource, Request, WebApp
from tests.procs import REPO

EXAMPLE = (REPO / "schedules.toml").read_text()
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
log = logging.getLogger("chronod.test.fuzz")

# -- values near the edges, in the config's own vocabulary ---------------------------------------

WORDS = [
    "90s", "0s", "1ms", "1m", "15m", "1h30m", "1d", "3650d", "3651d", "999999999d", "1000000d",
    "1000000000d", "99999999999999999999999s", "-30m", "+1h", "-3650d", "5 min",
    "30 17 * * 5", "0 3 * * L0", "5-5 * * * *", "0 0 30 2 *", "*/15 * * * *", "0 0 29 2 *",
    "@daily", "@hourly", "* * * * *", "0 9 * * 1#5", "0,L0 * * * *", "60 * * * *",
    "sunrise", "sunset", "noon", "dawn", "dusk", "civil", "nautical", "astronomical",
    "Europe/Berlin", "Australia/Sydney", "Pacific/Chatham", "America/Santiago", "UTC",
    "Etc/GMT-14", "Pacific/Kiritimati", "Mars/Olympus", "",
    "9999-12-31T23:00:00Z", "9998-12-31T23:00:00Z", "9999-01-01", "0001-01-01T00:00:00",
    "1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2027-03-28T02:30:00", "2026-11-01T01:30:00",
    "2038-07-01", "m:f", "pkg.mod:func", "skip", "queue", "allow", "none", "latest", "all",
    "default", "io", "echo hi", "a\u0000b", "x" * 300, "sqlite:state.db",
]  # fmt: skip
BIG = [10**18, -(10**18), 2**63, 10**100, 10**4000, 0, 1, -1, 100, 100_001]

text = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))
scalars = st.one_of(
    text,
    text,
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from(BIG),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
    st.datetimes(timezones=st.sampled_from([None, UTC])),
    st.times(),
)
keys = st.one_of(st.sampled_from(["k", "A", "x y", "A=B", "a.b"]), st.text(max_size=6))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """An array or table nested 20 to 60 levels deep: around the bound of 32."""
    value: Any = draw(scalars)
    for _ in range(draw(st.integers(20, 60))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


any_value = st.one_of(values, values, values, deep())
# Half of them at or beyond the bound (3650d): huge ones used to overflow only later.
DURATIONS = st.sampled_from(
    ["90s", "1ms", "1m", "1d", "-30m", "+1h", "0s", "5 min"]
) | st.sampled_from(
    ["3650d", "-3650d", "3651d", "999999999d", "1000000d", "1000000000d", "99999999999999999999s"]
)
INSTANTS = st.one_of(
    st.sampled_from([w for w in WORDS if w[:1].isdigit() and "-" in w[:5]]),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
    st.datetimes(timezones=st.sampled_from([None, UTC])),
)
# Values a key is likely to get wrong (or right at the edge), by key; any key can get anything.
BY_KEY: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(
        [
            *("every", "timeout", "retry_delay", "kill_grace", "grace", "offset", "lease"),
            *("drain_timeout", "attempt_lease"),
        ],
        DURATIONS,
    ),
    **dict.fromkeys(["start", "end", "anchor"], INSTANTS),
    "cron": st.sampled_from([w for w in WORDS if "*" in w or w.startswith("@")]),
    "solar": st.sampled_from(["sunrise", "sunset", "noon", "dawn", "dusk", "moonrise"]),
    "timezone": st.sampled_from(WORDS[37:45]),
    **dict.fromkeys(
        ["latitude", "longitude", "elevation", "depression"],
        st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([89.99, -90, 180, 9000]),
    ),
    **dict.fromkeys(["retries", "catchup_limit", "workers", "history"], st.sampled_from(BIG)),
    **dict.fromkeys(["args", "kwargs", "env"], deep() | values),
}


def value_for(key: str) -> st.SearchStrategy[Any]:
    typed = BY_KEY.get(key)
    # Mostly values of the key's own kind: a document with one mistake is refused by check
    # before anything else sees it, so the interesting ones are nearly valid.
    return any_value if typed is None else st.one_of(*[typed] * 8, any_value)


@st.composite
def tables(draw: st.DrawFn, known: tuple[str, ...], size: int) -> dict[str, Any]:
    typed = [key for key in known if key in BY_KEY]  # the keys with edges to find, mostly
    chosen = draw(
        st.lists(st.sampled_from(typed) | st.sampled_from(known), max_size=size, unique=True)
    )
    return {key: draw(value_for(key)) for key in chosen}


def toml(value: Any) -> str:
    """``value`` as a TOML value (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"


TEMPLATES = [
    {"every": "1m", "command": "true"},
    {"cron": "30 17 * * 5", "command": ["sh", "-c", "true"]},
    {"solar": "sunset", "latitude": 52.52, "longitude": 13.405, "offset": "-15m", "command": "x"},
    {"every": "30s", "call": "pkg.mod:func", "args": [1, "two"], "kwargs": {"a": True}},
]


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A schedules file: [chronod], [defaults] and a few jobs, each a template with edits."""
    lines: list[str] = []
    sections = {
        "chronod": draw(tables(DAEMON_KEYS, 1)),
        "defaults": {
            "timezone": draw(st.sampled_from(WORDS[37:45])),
            **draw(tables(DEFAULTABLE_KEYS, 1)),
        },
    }
    for header, table in sections.items():
        lines.append(f"[{header}]")
        lines += [f"{json.dumps(k)} = {toml(v)}" for k, v in table.items()]
    names = st.sampled_from(["a", "b", "job.1", "Z-9"]) | st.sampled_from(["x y", ""]) | text
    for name in draw(st.lists(names, min_size=1, max_size=3)):
        job = dict(draw(st.sampled_from(TEMPLATES)))
        job.update(draw(tables((*JOB_KEYS, "bogus"), 2)))
        lines.append(f"[jobs.{json.dumps(name)}]")
        lines += [f"{json.dumps(k)} = {toml(v)}" for k, v in job.items()]
    return "\n".join(lines) + "\n"


@st.composite
def mutants(draw: st.DrawFn) -> str:
    """The example file with one to three random edits."""
    lines = EXAMPLE.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        edits = ["value", "value", "add", "add", "delete", "copy", "insert", "cut"]
        edit = draw(st.sampled_from(edits))
        if edit == "value" and "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0]
            lines[index] = f"{key}= {toml(draw(value_for(key.strip())))}"
        elif edit == "add":  # a key of the table above: a job's, mostly
            key = draw(st.sampled_from(list(BY_KEY)) | st.sampled_from((*JOB_KEYS, *DAEMON_KEYS)))
            lines.insert(index + 1, f"{key} = {toml(draw(value_for(key)))}")
        elif edit == "delete":
            del lines[index]
        elif edit == "copy":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif edit == "insert":
            at = draw(st.integers(0, len(line)))
            lines[index] = (
                line[:at] + draw(st.sampled_from(list("[]{}\"'=#,.\\\n")) | text) + line[at:]
            )
        elif edit == "cut":
            return "\n".join(lines)[: draw(st.integers(0, len(EXAMPLE)))]
        if not lines:
            lines = [""]
    return "\n".join(lines)


# -- everything that consumes a config -------------------------------------------------------------


class Rig:
    """A leader that keeps running across the examples, as a daemon receiving reload after
    reload, on a SQLite store under a manual clock."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "schedules.toml"
        self.clock = ManualClock(T0)
        self.url = f"sqlite:///{directory / 'state.db'}"
        self.store = SQLiteStore(directory / "state.db", clock=self.clock)
        lease = self.store.acquire_lease("fuzz", "token", timedelta(days=3650))
        assert lease is not None
        self.lease: Lease = lease
        self.scheduler = Scheduler(self.store)
        self.running = load_config(REPO / "schedules.toml")
        self.scheduler.load(self.lease, self.running.jobs)

    def exercise(self, document: str) -> None:
        self.path.write_text(document)
        try:
            config = load_config(self.path)  # chronod check
        except ConfigError:
            assert reload_config(self.path, self.running, log) is None  # the daemon keeps its own
            return
        self.preview(config)
        self.reload()
        self.web(config)

    def preview(self, config: Config) -> None:
        now = self.clock.now()
        for job in config.jobs.values():
            rows = upcoming(job, now, 5)
            as_json(rows)
            for row in rows:
                local_text(row)
                relative_text(row, now)
            job.schedule.describe()
            assert job.fingerprint
            assert job.digest
            job_period(job, now)
            # The leader's decision when the job's first slot is due, whenever that is.
            first = job.schedule.next_after(now)
            if first is not None:
                plan = plan_slots(job, now, first + timedelta(seconds=1))
                guard_ttl(job, first, plan.next_due)

    def reload(self) -> None:
        config = reload_config(self.path, self.running, log)
        assert config is not None
        self.scheduler.load(self.lease, config.jobs)
        for _ in range(2):  # as the daemon does: sleep until the next job is due, then tick
            wake = self.scheduler.next_wake()
            soon = self.clock.now() + timedelta(hours=1)
            self.clock.set(max(self.clock.now(), min(wake or soon, soon)))
            self.scheduler.tick(self.lease, self.store.now())
        self.running = config

    def web(self, config: Config) -> None:
        app = WebApp(
            config=ConfigSource(self.path),
            open_store=lambda _: SQLiteStore(Path(self.url[len("sqlite:///") :]), clock=self.clock),
        )
        paths = ["/api/v1/jobs", "/api/v1/timeline", "/api/v1/timeline?hours=168&zone=utc"]
        paths += [f"/api/v1/jobs/{name}" for name in list(config.jobs)[:1]]
        for path in paths:
            target, _, query = path.partition("?")
            answer = app.handle(
                Request(
                    method="GET",
                    path=target,
                    query=dict(item.split("=") for item in query.split("&") if item),
                    headers={},
                )
            )
            assert answer.status < 500, (path, answer.body[:300])


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory() as directory:
        made = Rig(Path(directory))
        yield made
        made.store.close()


@settings(max_examples=250)
@given(document=documents())
def test_generated_documents_pass_check_or_work_everywhere(rig: Rig, document: str) -> None:
    rig.exercise(document)


@settings(max_examples=250)
@given(document=mutants())
def test_edits_of_the_example_pass_check_or_work_everywhere(rig: Rig, document: str) -> None:
    rig.exercise(document)
