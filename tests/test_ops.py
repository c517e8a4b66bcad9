"""``chronod status/history/trigger/pause/resume`` end to end, on both stores.

State is set up with the store API directly (a lease, ``sync_jobs``, dispatched slots claimed and
finished with outcomes, a registered worker) and the commands are run through
:func:`chronod.cli.main`, the real console entry point, so exit codes and one-line errors are the
ones a user sees. Store-time-dependent numbers (lease left, ages, next fire) are derived from the
``now`` the JSON output reports; the exact human layout is pinned by pure rendering tests on
hand-built snapshots. Unreachable stores are tried through a real ``python -m chronod`` process.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod import ops
from chronod.cli import history_lines, main, status_lines
from chronod.config import Config, JobConfig, load_config
from chronod.errors import StoreConfigError
from chronod.instants import format_utc, parse_utc
from chronod.preview import upcoming
from chronod.runtime import store_settings
from chronod.store import StoreSettings, open_store
from chronod.store.base import (
    AttemptResult,
    JobState,
    JobSync,
    Lease,
    Outcome,
    RunRecord,
    RunState,
    SlotDispatch,
    Store,
    WorkerInfo,
)
from chronod.tz import UTC
from tests.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parent.parent
LEASE_TTL = timedelta(seconds=60)
WORKER = "host-b:42"
STOPPED_WORKER = "host-c:7"  # registered, then announced its clean stop
FAILED_OUTPUT = "".join(f"line {i}\n" for i in range(1, 9))

CONFIG = """\
[chronod]
namespace = "{namespace}"

[defaults]
timezone = "UTC"

[jobs.report]
every = "10m"
queue = "reports"
overlap = "allow"
command = "true"

[jobs.backup]
cron = "30 2 * * *"
timezone = "Europe/Berlin"
retries = 2
command = ["backup", "--all"]

[jobs.cleanup]
every = "15m"
command = "true"
"""


@dataclass(frozen=True)
class Env:
    config_file: Path
    config: Config
    url: str

    def open(self) -> Store:
        """A new store instance on the same state the commands see."""
        return open_store(store_settings(self.config, self.url))


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Seeded:
    """What :func:`seed` wrote, for the expectations."""

    lease: Lease
    base: datetime  # load instant of every job
    slots: tuple[datetime, datetime, datetime]  # report's first three slots after base
    legacy_run: str


@pytest.fixture
def env(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    if store_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    config_file = tmp_path / "schedules.toml"
    # A fresh Redis namespace per test: nothing another test left behind can pass for our state.
    config_file.write_text(CONFIG.format(namespace=f"t{uuid.uuid4().hex[:12]}"))
    return Env(config_file=config_file, config=load_config(config_file), url=url)


@pytest.fixture
def store(env: Env) -> Iterator[Store]:
    opened = env.open()
    yield opened
    opened.close()


def chronod(capsys: pytest.CaptureFixture[str], env: Env, *args: str) -> Result:
    """Run the console entry point with ``env``'s config and store; return code and output."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(env.config_file), "--store", env.url, *args])
    captured = capsys.readouterr()
    code = exit_info.value.code
    return Result(code if isinstance(code, int) else 1, captured.out, captured.err)


def chronod_json(capsys: pytest.CaptureFixture[str], env: Env, *args: str) -> Any:
    result = chronod(capsys, env, *args, "--json")
    assert (result.code, result.err) == (0, ""), result
    return json.loads(result.out)


# -- seeding -------------------------------------------------------------------------------------


def job_sync(job: JobConfig, base: datetime) -> JobSync:
    return JobSync(
        name=job.name, fingerprint=job.fingerprint, next_due=job.schedule.next_after(base)
    )


def slot_item(job: JobConfig, slot: datetime) -> SlotDispatch:
    return SlotDispatch(
        job=job.name,
        fingerprint=job.fingerprint,
        slot=slot,
        next_due=job.schedule.next_after(slot),
        queue=job.queue,
        digest=job.digest,
        overlap=job.overlap,
        max_attempts=job.max_attempts,
        guard_ttl=timedelta(days=1),
    )


def run_slot(store: Store, lease: Lease, item: SlotDispatch, result: AttemptResult) -> str:
    """Dispatch ``item``, claim it as :data:`WORKER` and finish it with ``result``."""
    (dispatched,) = store.dispatch(lease, [item])
    assert dispatched.run_id is not None, dispatched
    claim = store.claim(WORKER, [item.queue], uuid.uuid4().hex, LEASE_TTL, wait=0)
    assert claim is not None
    assert claim.run.run_id == dispatched.run_id
    store.finish(claim.run.run_id, claim.token, result)
    return dispatched.run_id


def seed(store: Store, config: Config) -> Seeded:
    """node-a leads and node-b stands by; report failed then succeeded and has a third slot
    queued; cleanup is paused; legacy ran once and was retired; one worker is registered, another
    stopped cleanly."""
    lease = store.acquire_lease("node-a", uuid.uuid4().hex, LEASE_TTL)
    assert lease is not None
    base = store.now().replace(second=0, microsecond=0) - timedelta(hours=2)
    legacy = JobSync(name="legacy", fingerprint="legacy-fp", next_due=None)
    store.sync_jobs(lease, [*(job_sync(j, base) for j in config.jobs.values()), legacy], base)
    legacy_item = SlotDispatch(
        job="legacy",
        fingerprint="legacy-fp",
        slot=base + timedelta(minutes=1),
        next_due=None,
        queue="default",
        digest="legacy-digest",
        overlap="skip",
        max_attempts=1,
        guard_ttl=timedelta(days=1),
    )
    done = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="old\n")
    legacy_run = run_slot(store, lease, legacy_item, done)
    store.retire_jobs(lease, list(config.jobs))

    report = config.jobs["report"]
    fires = report.schedule.fires(base)
    slots = (next(fires).at, next(fires).at, next(fires).at)
    failed = AttemptResult(outcome=Outcome.FAILED, exit_code=3, output=FAILED_OUTPUT, error="boom")
    run_slot(store, lease, slot_item(report, slots[0]), failed)
    ok = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="done\n")
    run_slot(store, lease, slot_item(report, slots[1]), ok)
    store.dispatch(lease, [slot_item(report, slots[2])])  # left queued

    store.set_paused("cleanup", True)
    store.register_worker(
        WorkerInfo(
            worker=WORKER, queues=("reports", "default"), seen_at=base, running=0, concurrency=4
        )
    )
    store.register_worker(
        WorkerInfo(
            worker=STOPPED_WORKER, queues=("default",), seen_at=base, running=1, concurrency=1
        )
    )
    store.announce(STOPPED_WORKER, "worker", stopped=True)
    store.announce("node-b", "scheduler")  # a standby
    store.announce("node-a", "scheduler")  # the leader announces itself too
    return Seeded(lease=lease, base=base, slots=slots, legacy_run=legacy_run)


def state_of(store: Store, job: str) -> JobState:
    return store.job_states()[job]


def seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 3)


# -- status ---------------------------------------------------------------------------------------


def expected_job(
    job: JobConfig, state: JobState, now: datetime, *, next_after: datetime
) -> dict[str, Any]:
    (fire,) = upcoming(job, next_after, 1)
    return {
        "job": job.name,
        "kind": job.kind,
        "schedule": job.schedule.describe(),
        "after": None,
        "when": None,
        "timezone": job.timezone,
        "queue": job.queue,
        "retired": False,
        "loaded": True,
        "paused": state.paused,
        "finished": False,
        "last_outcome": None if state.last_outcome is None else state.last_outcome.value,
        "last_outcome_at": None
        if state.last_outcome_at is None
        else format_utc(state.last_outcome_at),
        "last_success_at": None
        if state.last_success_at is None
        else format_utc(state.last_success_at),
        "next_fire": format_utc(fire.at),
        "next_fire_local": fire.local.isoformat(),
        "next_fire_note": fire.note,
        "watermark": None if state.watermark is None else format_utc(state.watermark),
        "active": state.active,
        "missed": state.missed,
    }


def test_status_json(capsys: pytest.CaptureFixture[str], env: Env, store: Store) -> None:
    seeded = seed(store, env.config)
    status = chronod_json(capsys, env, "status")
    now = parse_utc(status["now"])
    states = store.job_states()
    report, backup, cleanup = (env.config.jobs[n] for n in ("report", "backup", "cleanup"))
    _, worker = store.workers()  # the first is STOPPED_WORKER
    seen = {p.member: p.seen_at for p in store.presences()}
    legacy = states["legacy"]

    assert status == {
        "now": status["now"],
        "store": store.describe(),
        "warnings": [],  # a store a daemon uses, on a roomy disk (Store.storage_problems)
        "leader": {
            "node": "node-a",
            "epoch": seeded.lease.epoch,
            "expires_at": format_utc(seeded.lease.expires_at),
            "lease_left_s": seconds(seeded.lease.expires_at, now),
        },
        "schedulers": [
            {
                "node": node,
                "role": role,
                "seen_at": format_utc(seen[node]),
                "age_s": seconds(now, seen[node]),
            }
            for node, role in (("node-a", "leader"), ("node-b", "standby"))
        ],
        "workers": [
            {
                "worker": STOPPED_WORKER,
                "queues": ["default"],
                "seen_at": format_utc(seen[STOPPED_WORKER]),  # when it said it stopped
                "age_s": seconds(now, seen[STOPPED_WORKER]),
                "running": 0,
                "concurrency": 1,
                "stopped": True,
            },
            {
                "worker": WORKER,
                "queues": ["reports", "default"],
                "seen_at": format_utc(worker.seen_at),
                "age_s": seconds(now, worker.seen_at),
                "running": 0,
                "concurrency": 4,
                "stopped": False,
            },
        ],
        "queues": {"default": 0, "reports": 1},
        "jobs": [
            # report's watermark is its third slot (dispatched, still queued), long before now
            expected_job(report, states["report"], now, next_after=now),
            expected_job(backup, states["backup"], now, next_after=now),
            expected_job(cleanup, states["cleanup"], now, next_after=now),
            {
                "job": "legacy",
                "kind": None,
                "schedule": None,
                "after": None,
                "when": None,
                "timezone": None,
                "queue": None,
                "retired": True,
                "loaded": False,
                "paused": False,
                "finished": False,
                "last_outcome": "succeeded",
                "last_outcome_at": format_utc(legacy.last_outcome_at or now),
                "last_success_at": format_utc(legacy.last_success_at or now),
                "next_fire": None,
                "next_fire_local": None,
                "next_fire_note": None,
                "watermark": format_utc(seeded.base + timedelta(minutes=1)),
                "active": 0,
                "missed": 0,
            },
        ],
        "notifications": {"outbox": {"depth": 0, "dropped": 0}, "channels": []},
    }
    assert 0 < status["leader"]["lease_left_s"] <= 60
    # The seeded facts, stated independently of the expectation builder above:
    by_name = {j["job"]: j for j in status["jobs"]}
    assert by_name["report"]["last_outcome"] == "succeeded"
    assert by_name["report"]["watermark"] == format_utc(seeded.slots[2])
    assert by_name["report"]["active"] == 1
    assert by_name["cleanup"]["paused"] is True
    assert by_name["backup"]["next_fire_local"].endswith(("+01:00", "+02:00"))
    assert by_name["backup"]["next_fire_local"][11:16] == "02:30"
    assert parse_utc(by_name["report"]["next_fire"]) > now


def test_status_next_fire_follows_a_watermark_ahead_of_now(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    """The leader's rule is the first slot after max(watermark, now): a watermark in the future
    (a paused job resumed by a store whose clock ran ahead) holds the next fire back."""
    report = env.config.jobs["report"]
    lease = store.acquire_lease("node-a", uuid.uuid4().hex, LEASE_TTL)
    assert lease is not None
    ahead = store.now().replace(microsecond=0) + timedelta(hours=5)
    store.sync_jobs(lease, [job_sync(report, ahead)], ahead)
    status = chronod_json(capsys, env, "status")
    (row,) = (j for j in status["jobs"] if j["job"] == "report")
    assert row["next_fire"] == format_utc(report.schedule.next_after(ahead) or ahead)


def test_status_shows_an_at_job_finished_once_its_last_instant_was_decided(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    text = env.config_file.read_text()
    start = store.now().replace(microsecond=0) - timedelta(hours=2)
    first, last = start + timedelta(minutes=30), start + timedelta(hours=1)
    text += f'[jobs.once]\nat = ["{format_utc(first)}", "{format_utc(last)}"]\ncommand = "true"\n'
    env.config_file.write_text(text)
    once = load_config(env.config_file).jobs["once"]
    lease = store.acquire_lease("node-a", uuid.uuid4().hex, LEASE_TTL)
    assert lease is not None
    store.sync_jobs(lease, [job_sync(once, start)], start)

    def row() -> dict[str, Any]:
        status = chronod_json(capsys, env, "status")
        found: dict[str, Any] = next(j for j in status["jobs"] if j["job"] == "once")
        return found

    assert row()["finished"] is False  # both instants still undecided (the leader will miss them)
    done = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0)
    run_slot(store, lease, slot_item(once, first), done)
    assert row()["finished"] is False
    store.dispatch(lease, [slot_item(once, last)])
    assert row()["finished"] is False  # its last run is still queued
    claim = store.claim(WORKER, ["default"], uuid.uuid4().hex, LEASE_TTL, wait=0)
    assert claim is not None
    store.finish(claim.run.run_id, claim.token, done)
    found = row()
    assert found["finished"] is True
    assert found["next_fire"] is None
    human = chronod(capsys, env, "status").out
    assert re.search(r"^once .* finished$", human, re.M), human


def test_status_human(capsys: pytest.CaptureFixture[str], env: Env, store: Store) -> None:
    seeded = seed(store, env.config)
    result = chronod(capsys, env, "status")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0] == f"store   {store.describe()}"
    assert re.fullmatch(rf"leader  node-a, epoch {seeded.lease.epoch}, lease \d+s left", lines[1])
    assert lines[2] == ""
    ago = r"(just now|\d+[dhms]( \d+[hms])? ago)"
    assert re.fullmatch(r"SCHEDULER\s+ROLE\s+SEEN", lines[3])
    assert re.fullmatch(rf"node-a\s+leader\s+{ago}", lines[4]), lines[4]
    assert re.fullmatch(rf"node-b\s+standby\s+{ago}", lines[5]), lines[5]
    assert lines[6] == ""
    assert re.fullmatch(r"WORKER\s+QUEUES\s+SEEN\s+RUNNING", lines[7])
    assert re.fullmatch(rf"{STOPPED_WORKER}\s+default\s+stopped {ago}\s+-", lines[8]), lines[8]
    assert re.fullmatch(rf"{WORKER}\s+reports,default\s+{ago}\s+0/4", lines[9]), lines[9]
    assert lines[10:14] == ["", "QUEUE    QUEUED", "default  0", "reports  1"]
    assert lines[14] == ""
    header, *rows = lines[15:]
    assert re.fullmatch(
        r"JOB +KIND +SCHEDULE +ZONE +PAUSED +ACTIVE +MISSED +LAST +LAST OK +NEXT", header
    ), header
    # Columns are aligned: every cell starts where its header does.
    starts = [header.index(h) for h in ("KIND", "SCHEDULE", "PAUSED", "LAST", "NEXT")]
    for row in rows:
        assert all(row[s - 2 : s] == "  " and row[s] != " " for s in starts), row
    when = r"\w{3} \d{4}-\d\d-\d\d \d\d:\d\d [A-Z]+ \(in \d+[dhms]( \d+[hms])?\)"
    assert re.fullmatch(
        rf"report\s+interval\s+every 10m\s+UTC\s+no\s+1\s+0\s+succeeded {ago}\s+{ago}\s+{when}",
        rows[0],
    ), rows[0]
    assert re.fullmatch(
        rf"backup\s+cron\s+at 02:30 every day\s+Europe/Berlin\s+no\s+0\s+0\s+-\s+-\s+{when}",
        rows[1],
    ), rows[1]
    assert re.search(r"\s+02:30 CES?T \(in", rows[1]), rows[1]
    assert re.fullmatch(
        rf"cleanup\s+interval\s+every 15m\s+UTC\s+yes\s+0\s+0\s+-\s+-\s+{when}", rows[2]
    ), rows[2]
    assert re.fullmatch(
        rf"legacy\s+-\s+\(retired\)\s+-\s+no\s+0\s+0\s+succeeded {ago}\s+{ago}\s+-", rows[3]
    )
    assert len(rows) == 4


def test_status_of_a_fresh_store(capsys: pytest.CaptureFixture[str], env: Env) -> None:
    """Nothing has used the store: status says so in its first lines, and creates nothing."""
    result = chronod(capsys, env, "status")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    if env.url.startswith("sqlite"):
        assert not sqlite_file(env).exists()
        assert list(sqlite_file(env).parent.iterdir()) == [env.config_file]
        warning = "this store does not exist, so no chronod process uses it"
    else:
        warning = f"no scheduler has ever loaded a job of {env.config_file} on this store"
    assert lines[0] == f"store    {describe(env)}"
    assert lines[1] == (
        f"warning  {warning}; if a daemon reads this config, it keeps its state in another "
        f"store: name the store in the config's [chronod] store ({env.config_file}), not in a "
        "daemon's environment or command line"
    )
    assert lines[2] == "leader   none (no scheduler holds the lease; nothing is being dispatched)"
    assert "schedulers: none seen in the last minute" in lines
    assert "workers: none seen in the last minute" in lines
    assert [line for line in lines if line.startswith("note: ")] == [
        f"note: {name}: this definition is not loaded by a scheduler yet "
        "(new or edited since its last load or reload)"
        for name in ("report", "backup", "cleanup")
    ]
    status = chronod_json(capsys, env, "status")
    assert status["warnings"] == [lines[1][len("warning  ") :]]
    assert status["leader"] is None
    assert status["schedulers"] == []
    assert status["workers"] == []
    assert status["queues"] == {"default": 0, "reports": 0}
    assert [(j["job"], j["loaded"], j["last_outcome"], j["watermark"]) for j in status["jobs"]] == [
        ("report", False, None, None),
        ("backup", False, None, None),
        ("cleanup", False, None, None),
    ]


def sqlite_file(env: Env) -> Path:
    return Path("/" + env.url[len("sqlite:") :].lstrip("/"))


def describe(env: Env) -> str:
    with env.open() as store:
        return store.describe()


# -- history --------------------------------------------------------------------------------------


def test_history_json(capsys: pytest.CaptureFixture[str], env: Env, store: Store) -> None:
    seeded = seed(store, env.config)
    history = chronod_json(capsys, env, "history", "--job", "report")
    assert history["job"] == "report"
    assert [(r["slot"], r["state"], r["outcome"]) for r in history["live"]] == [
        (format_utc(seeded.slots[2]), "queued", None)
    ]
    ok, failed = history["runs"]  # newest first
    assert set(ok) == set(ops.run_json(store.history("report", 1)[0]))
    assert {k: failed[k] for k in failed if k not in TIMES} == {
        "run_id": f"report@{format_utc(seeded.slots[0])}",
        "job": "report",
        "manual": False,
        "upstream_run_id": None,
        "slot": format_utc(seeded.slots[0]),
        "state": "finished",
        "outcome": "failed",
        "queue": "reports",
        "attempt": 1,
        "max_attempts": 1,
        "epoch": seeded.lease.epoch,
        "worker": WORKER,
        "exit_code": 3,
        "error": "boom",
        "output": FAILED_OUTPUT,  # the whole stored tail
    }
    assert (ok["slot"], ok["outcome"], ok["exit_code"], ok["output"]) == (
        format_utc(seeded.slots[1]),
        "succeeded",
        0,
        "done\n",
    )
    for run in (ok, failed):
        started, finished = parse_utc(run["started_at"]), parse_utc(run["finished_at"])
        assert run["duration_s"] == seconds(finished, started) >= 0
        assert run["not_before"] == run["slot"]
    limited = chronod_json(capsys, env, "history", "--job", "report", "--limit", "1")
    assert [r["outcome"] for r in limited["runs"]] == ["succeeded"]


TIMES = ("created_at", "not_before", "started_at", "finished_at", "duration_s")


def test_history_human(capsys: pytest.CaptureFixture[str], env: Env, store: Store) -> None:
    seeded = seed(store, env.config)
    result = chronod(capsys, env, "history", "--job", "report")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0] == "report: every 10m (UTC), newest first"
    assert lines[1].split() == [
        "SLOT",
        "ATTEMPT",
        "OUTCOME",
        "DURATION",
        "EXIT",
        "WORKER",
        "FINISHED",
    ]
    slot = [s.strftime("%a %Y-%m-%d %H:%M UTC") for s in seeded.slots]
    assert re.fullmatch(rf"{slot[2]}\s+0/1\s+queued\s+-\s+-\s+-\s+-", lines[2]), lines[2]
    ago = r"(just now|\d+[dhms]( \d+[hms])? ago)"
    took = r"(\d+ms|\d+[dhms]( \d+[hms])?|0s)"
    assert re.fullmatch(rf"{slot[1]}\s+1/1\s+succeeded\s+{took}\s+0\s+{WORKER}\s+{ago}", lines[3])
    assert lines[4] == "    | done"
    assert re.fullmatch(rf"{slot[0]}\s+1/1\s+failed\s+{took}\s+3\s+{WORKER}\s+{ago}", lines[5])
    assert lines[6:] == [
        "    error: boom",
        "    | ... 3 earlier lines (--json shows the whole tail)",
        *(f"    | line {i}" for i in range(4, 9)),
    ]


def test_history_of_a_retired_job(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    seeded = seed(store, env.config)
    result = chronod(capsys, env, "history", "--job", "legacy")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0] == "legacy: retired (no longer in the config), newest first"
    assert lines[2].startswith(
        (seeded.base + timedelta(minutes=1)).strftime("%a %Y-%m-%d %H:%M UTC")
    )
    runs = chronod_json(capsys, env, "history", "--job", "legacy")["runs"]
    assert [r["run_id"] for r in runs] == [seeded.legacy_run]


def test_history_of_a_job_without_runs(capsys: pytest.CaptureFixture[str], env: Env) -> None:
    """On a store nothing has used yet: no runs, and (SQLite) a note that the store does not
    exist rather than a new, empty one."""
    result = chronod(capsys, env, "history", "--job", "backup")
    assert result.code == 0, result
    missing = [f"note: store {describe(env)} does not exist: no chronod process has used it"]
    assert result.out.splitlines() == [
        "backup: at 02:30 every day (Europe/Berlin)",
        "  no runs recorded yet",
        *(missing if env.url.startswith("sqlite") else []),
    ]
    assert chronod_json(capsys, env, "history", "--job", "backup") == {
        "job": "backup",
        "live": [],
        "runs": [],
    }
    unknown = chronod(capsys, env, "history", "--job", "nope")
    assert (unknown.code, unknown.err) == (
        2,
        f"chronod: error: no job named 'nope' in {env.config_file} "
        "(jobs: backup, cleanup, report)\n",
    )
    if env.url.startswith("sqlite"):  # read-only commands create no state
        assert list(sqlite_file(env).parent.iterdir()) == [env.config_file]


def test_history_orders_by_slot_with_attempts_together(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    """Attempts finish in another order than their slots: backup's first slot fails, its retry
    waits, the next slot is skipped (overlap) meanwhile, then the retry succeeds. The store keeps
    that finishing order; history shows the slots newest first, each run's attempts together."""
    seeded = seed(store, env.config)
    backup = env.config.jobs["backup"]  # 2 retries, overlap "skip"
    first, second = seeded.base + timedelta(minutes=5), seeded.base + timedelta(minutes=6)
    store.dispatch(seeded.lease, [slot_item(backup, first)])
    claim = store.claim(WORKER, ["default"], uuid.uuid4().hex, LEASE_TTL, wait=0)
    assert claim is not None
    retry = AttemptResult(outcome=Outcome.FAILED, exit_code=1, retry_at=store.now())
    store.finish(claim.run.run_id, claim.token, retry)
    (skipped,) = store.dispatch(seeded.lease, [slot_item(backup, second)])
    assert skipped.status.value == "skipped"
    claim = store.claim(WORKER, ["default"], uuid.uuid4().hex, LEASE_TTL, wait=0)
    assert claim is not None
    assert claim.attempt == 2
    store.finish(claim.run.run_id, claim.token, AttemptResult(outcome=Outcome.SUCCEEDED))
    kept = [r.slot for r in store.history("backup", 10)]
    assert [(r.slot, r.attempt) for r in store.history("backup", 10)] == [
        (first, 2),
        (second, 0),
        (first, 1),
    ]  # the order they finished in

    runs = chronod_json(capsys, env, "history", "--job", "backup")["runs"]
    assert [(r["slot"], r["attempt"], r["outcome"]) for r in runs] == [
        (format_utc(second), 0, "skipped"),
        (format_utc(first), 2, "succeeded"),
        (format_utc(first), 1, "failed"),
    ]
    rows = chronod(capsys, env, "history", "--job", "backup").out.splitlines()[2:]
    local = [backup.schedule.zone.to_local(s).strftime("%a %Y-%m-%d %H:%M %Z") for s in kept]
    assert [row.split()[:6] for row in rows if not row.startswith(" ")] == [
        [*local[1].split(), "0/3", "skipped"],
        [*local[0].split(), "2/3", "succeeded"],
        [*local[2].split(), "1/3", "failed"],
    ]


# -- trigger --------------------------------------------------------------------------------------


def test_trigger_queues_a_manual_run_without_consuming_a_slot(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    seed(store, env.config)
    before = state_of(store, "report")
    result = chronod(capsys, env, "trigger", "--job", "report")
    assert (result.code, result.err) == (0, "")
    match = re.fullmatch(
        r"triggered report: run (report@\S+~manual) queued on queue 'reports'\n", result.out
    )
    assert match is not None, result.out
    with env.open() as other:  # what a worker or another operator sees
        live = {r.run_id: r for r in other.live_runs("report")}
        after = state_of(other, "report")
    run = live[match.group(1)]
    assert (run.manual, run.state, run.queue, run.epoch) == (True, RunState.QUEUED, "reports", 0)
    assert run.digest == env.config.jobs["report"].digest
    assert (after.watermark, after.last_slot, after.next_due) == (
        before.watermark,
        before.last_slot,
        before.next_due,
    )
    assert store.queue_depths()["reports"] == 2


def test_trigger_json_and_overlap(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    """backup (overlap skip, 2 retries): a second trigger waits behind the first."""
    seed(store, env.config)
    first = chronod_json(capsys, env, "trigger", "--job", "backup")
    assert set(first) == set(ops.run_json(store.live_runs("backup")[0]))
    assert re.fullmatch(r"backup@\S+~manual", first["run_id"])
    assert (first["state"], first["outcome"], first["queue"], first["max_attempts"]) == (
        "queued",
        None,
        "default",
        3,
    )
    assert first["manual"] is True
    assert first["slot"] == first["created_at"] == first["run_id"][len("backup@") : -len("~manual")]
    second = chronod(capsys, env, "trigger", "--job", "backup")
    assert re.fullmatch(
        r"triggered backup: run backup@\S+~manual "
        r"waiting behind the active run on queue 'default'\n",
        second.out,
    ), second.out
    assert [r.state for r in store.live_runs("backup")] == [RunState.QUEUED, RunState.WAITING]


# -- pause / resume -------------------------------------------------------------------------------


def test_pause_and_resume_persist(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    seeded = seed(store, env.config)
    result = chronod(capsys, env, "pause", "--job", "report")
    assert (result.code, result.err, result.out) == (
        0,
        "",
        "paused report: its slots pass without running until 'chronod resume --job report'\n",
    )
    with env.open() as other:
        assert state_of(other, "report").paused
    assert chronod(capsys, env, "pause", "--job", "report").out == "report was already paused\n"
    assert [j["paused"] for j in chronod_json(capsys, env, "status")["jobs"]] == [
        True,
        False,
        True,
        False,
    ]

    # A failover: node-a lets go, node-b takes over and loads the config again.
    store.release_lease(seeded.lease)
    lease = store.acquire_lease("node-b", uuid.uuid4().hex, LEASE_TTL)
    assert lease is not None
    loaded = store.sync_jobs(lease, [job_sync(env.config.jobs["report"], store.now())], store.now())
    assert loaded[0].paused

    before_resume = store.now()
    result = chronod(capsys, env, "resume", "--job", "report")
    assert (result.code, result.err) == (0, "")
    with env.open() as other:
        state = state_of(other, "report")
    assert not state.paused
    assert state.watermark is not None
    assert state.watermark >= before_resume  # nothing from the paused period runs
    fire = env.config.jobs["report"].schedule.next_after(state.watermark)
    assert fire is not None
    assert result.out.startswith(
        f"resumed report: next fire {fire.strftime('%a %Y-%m-%d %H:%M UTC')} (in "
    )
    again = chronod(capsys, env, "resume", "--job", "report")
    assert again.out.startswith("report was not paused; next fire ")
    with env.open() as other:
        assert state_of(other, "report").watermark == state.watermark  # a repeat moves nothing


def test_pause_and_resume_json_with_force(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    """With --force a job can be paused before any scheduler loaded it (and the store is created
    if need be): a new job paused ahead of the reload that adds it."""
    paused = chronod_json(capsys, env, "pause", "--job", "cleanup", "--force")
    assert paused == {"job": "cleanup", "paused": True, "changed": True, "watermark": None}
    assert chronod_json(capsys, env, "pause", "--job", "cleanup", "--force")["changed"] is False
    resumed = chronod_json(capsys, env, "resume", "--job", "cleanup", "--force")
    state = state_of(store, "cleanup")
    assert resumed == {
        "job": "cleanup",
        "paused": False,
        "changed": True,
        "watermark": format_utc(state.watermark or datetime.min.replace(tzinfo=UTC)),
    }
    assert state.watermark is not None


# -- steering the wrong store ---------------------------------------------------------------------

STEERING = [["trigger"], ["pause"], ["resume"], ["pause", "--json"]]


@pytest.mark.parametrize("command", STEERING, ids=" ".join)
def test_steering_a_store_that_does_not_exist_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    """The phantom-store trap: a shell opens a store no daemon uses. Refused, one line naming the
    store, exit 1, and the store is not created."""
    env = sqlite_env(tmp_path)
    result = chronod(capsys, env, command[0], "--job", "report", *command[1:])
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"chronod: error: refusing to {command[0]} report: store {describe(env)} does not exist, "
        "so no daemon uses it; check the store the daemon uses ([chronod] store in its config, "
        "or --store) and that this command reads the same config\n"
    )
    assert list(tmp_path.iterdir()) == [env.config_file]


@pytest.mark.parametrize("command", STEERING, ids=" ".join)
def test_steering_a_job_no_scheduler_loaded_here_is_refused(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store, command: list[str]
) -> None:
    """The store exists (SQLite) or answers (Redis), but no scheduler ever loaded the job on it:
    the daemon reads another store, or a config without the job. Refused; nothing written."""
    store.register_worker(  # something used the store, so it exists; no scheduler did
        WorkerInfo(
            worker=WORKER, queues=("default",), seen_at=store.now(), running=0, concurrency=1
        )
    )
    result = chronod(capsys, env, command[0], "--job", "report", *command[1:])
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"chronod: error: refusing to {command[0]} report: no scheduler has loaded it on store "
        f"{store.describe()}; check that this is the store the daemon uses ('chronod status' "
        "shows its leader) and that the daemon's config has the job (reload it after adding one)\n"
    )
    assert store.job_states() == {}
    assert store.live_runs() == []


def test_steering_a_job_the_daemon_retired_is_refused(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store
) -> None:
    """The daemon's config no longer has cleanup (it retired it); this shell's config still does."""
    seeded = seed(store, env.config)
    store.retire_jobs(seeded.lease, ["report", "backup"])
    for action in ("trigger", "pause", "resume"):
        result = chronod(capsys, env, action, "--job", "cleanup")
        assert result.code == 1, result
        assert result.err.startswith(f"chronod: error: refusing to {action} cleanup: no scheduler")
    assert chronod(capsys, env, "pause", "--job", "report").code == 0  # a loaded job: fine


def sqlite_env(directory: Path) -> Env:
    config_file = directory / "schedules.toml"
    config_file.write_text(CONFIG.format(namespace="chronod"))
    url = f"sqlite:///{directory / 'state' / 'chronod.db'}"
    return Env(config_file=config_file, config=load_config(config_file), url=url)


# -- which store: the same for every process that reads the config ------------------------------


def test_default_store_is_beside_the_config_whatever_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    settings = StoreSettings(url=None, config_dir=tmp_path)
    with open_store(settings) as store:
        assert store.describe() == f"sqlite://{tmp_path / '.chronod' / 'state.db'}"
    # A service manager's state directory never moves it: a process that has one refuses to
    # guess, naming the line to put in the config (where a shell reads it too).
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/chronod:/var/lib/other")
    with pytest.raises(StoreConfigError) as refused:
        open_store(settings)
    assert str(refused.value) == (
        f"the config in {tmp_path} names no store, and a service's state must not depend on its "
        'environment: set [chronod] store = "sqlite:///var/lib/chronod/chronod.db" there (or a '
        "Redis URL), so that commands typed in a shell open the same store"
    )
    named = StoreSettings(url="sqlite:///var/lib/chronod/chronod.db", config_dir=tmp_path)
    with open_store(named) as store:  # named in the config: the environment plays no part
        assert store.describe() == "sqlite:///var/lib/chronod/chronod.db"
    assert not (tmp_path / ".chronod").exists()


def test_read_only_commands_read_an_older_schema_without_migrating_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A database an older chronod wrote (schema 1, no presence table) while it still runs: a
    newer `chronod status` must not upgrade it under that daemon's feet."""
    env = sqlite_env(tmp_path)
    with env.open() as store:
        seeded = seed(store, env.config)
    with closing(sqlite3.connect(sqlite_file(env), isolation_level=None)) as conn:
        conn.execute("DROP TABLE presence")
        conn.execute("PRAGMA user_version = 1")
    status = chronod_json(capsys, env, "status")
    assert status["leader"]["epoch"] == seeded.lease.epoch
    assert status["schedulers"] == [
        {"node": "node-a", "role": "leader", "seen_at": None, "age_s": None}
    ]
    assert [w["stopped"] for w in status["workers"]] == [False, False]  # no stops recorded then
    assert chronod(capsys, env, "pause", "--job", "report").code == 0
    with closing(sqlite3.connect(sqlite_file(env))) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["history", "trigger", "pause", "resume"])
def test_unknown_job(
    capsys: pytest.CaptureFixture[str], env: Env, store: Store, command: str
) -> None:
    seed(store, env.config)
    before = store.job_states()
    result = chronod(capsys, env, command, "--job", "nope")
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        f"chronod: error: no job named 'nope' in {env.config_file} "
        "(jobs: backup, cleanup, report)\n"
    )
    assert store.job_states() == before  # e.g. pause did not create state for a typo
    if command != "history":  # a retired job cannot be acted on, only looked at
        assert chronod(capsys, env, command, "--job", "legacy").code == 2


def run_process(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "chronod", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["history", "--job", "report"],
        ["trigger", "--job", "report"],
        ["pause", "--job", "report"],
        ["resume", "--job", "report"],
    ],
    ids=" ".join,
)
def test_unreachable_redis(tmp_path: Path, command: list[str]) -> None:
    """A closed port: one line naming the store without its password, exit 1, within seconds."""
    config_file = tmp_path / "schedules.toml"
    config_file.write_text(CONFIG.format(namespace="chronod"))
    port = free_port()  # bound and released: nothing listens there
    url = f"redis://admin:hunter2-secret@127.0.0.1:{port}/0"
    done, took = run_process("--config", str(config_file), "--store", url, *command)
    assert took < 10, took
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert "hunter2" not in done.stderr
    assert re.fullmatch(
        rf"chronod: error: Redis store redis://admin:\*\*\*@127\.0\.0\.1:{port}/0 is unavailable: "
        r".*[Cc]onnect.*\n",
        done.stderr,
    ), done.stderr


@pytest.mark.parametrize(
    ("command", "verb"),
    [(["status"], "open"), (["pause", "--job", "report", "--force"], "create")],
    ids=["status", "pause --force"],
)
def test_unusable_sqlite_file(tmp_path: Path, command: list[str], verb: str) -> None:
    config_file = tmp_path / "schedules.toml"
    config_file.write_text(CONFIG.format(namespace="chronod"))
    (tmp_path / "plain-file").write_text("")
    path = tmp_path / "plain-file" / "state.db"
    done, _ = run_process("--config", str(config_file), "--store", f"sqlite:///{path}", *command)
    assert done.returncode == 1, done
    assert done.stdout == ""
    # (the reason in parentheses is the OS's: "Not a directory", or "File exists" from mkdir)
    assert re.fullmatch(
        rf"chronod: error: SQLite store {re.escape(str(path))}: cannot {verb} the database file "
        r"\([^)]+\)\n",
        done.stderr,
    ), done.stderr


# -- exact human layout (pure: hand-built snapshots, fixed instants) -----------------------------

NOW = datetime(2026, 3, 28, 23, 0, 30, tzinfo=UTC)

# 2026-03-29 is the spring-forward night in Berlin: backup's 02:30 does not exist that day.
_S = timedelta(seconds=1)

STATUS_LAYOUT = """\
store   redis://:***@db:6379/0
leader  a:1, epoch 7, lease 8s left

SCHEDULER  ROLE     SEEN
a:1        leader   1s ago
c:3        standby  4s ago
d:4        stopped  20s ago

WORKER  QUEUES           SEEN            RUNNING
b:2     default,reports  2s ago          1/4
e:5     default          stopped 9s ago  -

QUEUE    QUEUED
default  0
reports  12

JOB      KIND      SCHEDULE            ZONE           PAUSED  ACTIVE  MISSED  LAST               LAST OK    NEXT
report   interval  every 10m           UTC            no      1       4       failed 3m 12s ago  2h 5m ago  Sat 2026-03-28 23:10 UTC (in 9m 30s)
backup   cron      at 02:30 every day  Europe/Berlin  no      0       0       -                  -          Sun 2026-03-29 03:00 CEST (in 1h 59m)
cleanup  interval  every 15m           UTC            yes     0       0       -                  -          Sat 2026-03-28 23:15 UTC (in 14m 30s)
legacy   -         (retired)           -              no      0       0       lost 3d 1m ago     -          -
note: backup: 02:30 does not exist on 2026-03-29 (DST gap); runs at 03:00 CEST
note: backup: this definition is not loaded by a scheduler yet (new or edited since its last load or reload)
note: cleanup: this definition is not loaded by a scheduler yet (new or edited since its last load or reload)
"""  # noqa: E501

# By slot, newest first, whatever order the attempts finished in; the 22:10 slot's retry (queued)
# sits on top of its failed first attempt.
HISTORY_LAYOUT = """\
report: every 10m (UTC), newest first
SLOT                                  ATTEMPT  OUTCOME    DURATION  EXIT  WORKER  FINISHED
Sat 2026-03-28 22:59:59 UTC (manual)  1/3      running    -         -     b:2     -
Sat 2026-03-28 22:30 UTC              1/3      succeeded  2s        0     b:2     30m 26s ago
    | a
    | b
Sat 2026-03-28 22:20 UTC              3/3      timed-out  250ms     -     b:2     40m 29s ago
    error: killed after 1h
    | ... 2 earlier lines (--json shows the whole tail)
    | 2
    | 3
    | 4
    | 5
    | 6
Sat 2026-03-28 22:10 UTC              1/3      queued     -         -     -       -
    error: exit 1; retrying
Sat 2026-03-28 22:10 UTC              1/3      failed     1s        1     b:2     20m 30s ago
    error: exit 1
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The test config alone, for the rendering tests (which need no store)."""
    config_file = tmp_path / "schedules.toml"
    config_file.write_text(CONFIG.format(namespace="chronod"))
    return load_config(config_file)


def snapshot_job(config: Config, name: str, state: JobState | None) -> ops.JobStatus:
    job = config.jobs[name]
    fire = ops.next_fire(job, None if state is None else state.watermark, NOW)
    return ops.JobStatus(name=name, config=job, state=state, next_fire=fire)


def test_status_layout(config: Config) -> None:
    report_state = JobState(
        name="report",
        fingerprint=config.jobs["report"].fingerprint,
        watermark=NOW - timedelta(minutes=0, seconds=30),
        last_slot=NOW - timedelta(seconds=30),
        next_due=NOW + timedelta(minutes=9, seconds=30),
        last_outcome=Outcome.FAILED,
        last_outcome_at=NOW - timedelta(minutes=3, seconds=12, milliseconds=400),
        last_success_at=NOW - timedelta(hours=2, minutes=5),
        active=1,
        missed=4,
    )
    cleanup_state = JobState(
        name="cleanup",
        fingerprint="edited-since",
        watermark=NOW,
        last_slot=None,
        next_due=None,
        paused=True,
    )
    legacy_state = JobState(
        name="legacy",
        fingerprint="",
        watermark=NOW - timedelta(days=3),
        last_slot=None,
        next_due=None,
        last_outcome=Outcome.LOST,
        last_outcome_at=NOW - timedelta(days=3, minutes=1),
    )
    status = ops.ClusterStatus(
        now=NOW,
        store="redis://:***@db:6379/0",
        leader=ops.LeaderStatus(
            node="a:1",
            epoch=7,
            expires_at=NOW + timedelta(seconds=8.6),
            lease_left=timedelta(seconds=8.6),
        ),
        schedulers=(
            ops.SchedulerStatus(
                node="a:1", role="leader", seen_at=NOW - timedelta(seconds=1), age=_S
            ),
            ops.SchedulerStatus(node="c:3", role="standby", seen_at=NOW - 4 * _S, age=4 * _S),
            ops.SchedulerStatus(node="d:4", role="stopped", seen_at=NOW - 20 * _S, age=20 * _S),
        ),
        workers=(
            ops.WorkerStatus(
                worker="b:2",
                queues=("default", "reports"),
                seen_at=NOW - timedelta(seconds=2.5),
                age=timedelta(seconds=2.5),
                running=1,
                concurrency=4,
            ),
            ops.WorkerStatus(
                worker="e:5",
                queues=("default",),
                seen_at=NOW - 9 * _S,
                age=9 * _S,
                running=0,
                concurrency=1,
                stopped=True,
            ),
        ),
        queues={"default": 0, "reports": 12},
        jobs=(
            snapshot_job(config, "report", report_state),
            snapshot_job(config, "backup", None),
            snapshot_job(config, "cleanup", cleanup_state),
            ops.JobStatus(name="legacy", config=None, state=legacy_state, next_fire=None),
        ),
    )
    assert "\n".join(status_lines(status)) + "\n" == STATUS_LAYOUT


def finished_run(slot: datetime, **changes: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": f"report@{format_utc(slot)}",
        "job": "report",
        "slot": slot,
        "manual": False,
        "state": Outcome.SUCCEEDED,
        "queue": "reports",
        "digest": "d",
        "epoch": 7,
        "attempt": 1,
        "max_attempts": 3,
        "created_at": slot,
        "not_before": slot,
        "started_at": slot + timedelta(seconds=1),
        "finished_at": slot + timedelta(seconds=3, milliseconds=500),
        "worker": "b:2",
        "exit_code": 0,
        "output": "",
    }
    fields.update(changes)
    return RunRecord(**fields)


def test_history_layout(config: Config) -> None:
    slot = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)
    manual_at = datetime(2026, 3, 28, 22, 59, 59, 250000, tzinfo=UTC)
    history = ops.JobHistory(
        job="report",
        config=config.jobs["report"],
        live=(  # oldest first, as the store lists them; shown newest first
            finished_run(
                slot - timedelta(minutes=20),
                state=RunState.QUEUED,
                attempt=1,
                not_before=NOW + timedelta(seconds=30),
                started_at=None,
                finished_at=None,
                worker=None,
                exit_code=None,
                output="",
                error="exit 1; retrying",
            ),
            finished_run(
                manual_at,
                run_id=f"report@{format_utc(manual_at)}~manual",
                manual=True,
                state=RunState.RUNNING,
                attempt=1,
                finished_at=None,
                exit_code=None,
            ),
        ),
        runs=(  # as the store keeps them: newest finished first, which is not slot order
            finished_run(
                slot - timedelta(minutes=20),
                state=Outcome.FAILED,
                exit_code=1,
                error="exit 1",
                started_at=slot + timedelta(minutes=9, seconds=59),
                finished_at=slot + timedelta(minutes=10),
            ),
            finished_run(slot, output="a\nb\n"),
            finished_run(
                slot - timedelta(minutes=10),
                state=Outcome.TIMED_OUT,
                attempt=3,
                exit_code=None,
                error="killed after 1h",
                started_at=slot - timedelta(minutes=10),
                finished_at=slot - timedelta(minutes=9, seconds=59, milliseconds=750),
                output="".join(f"{i}\n" for i in range(7)),
            ),
        ),
    )
    assert "\n".join(history_lines(history, NOW)) + "\n" == HISTORY_LAYOUT


@pytest.mark.redis
def test_wrong_redis_password_is_not_printed(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reachable server refusing the credentials: exit 1, one line, the password redacted."""
    config_file = tmp_path / "schedules.toml"
    config_file.write_text(CONFIG.format(namespace="chronod"))
    url = f"redis://admin:hunter2-secret@127.0.0.1:{redis_server.port}/0"
    env = Env(config_file=config_file, config=load_config(config_file), url=url)
    result = chronod(capsys, env, "status", "--json")
    assert (result.code, result.out) == (1, "")
    assert "hunter2" not in result.err
    assert result.err.startswith(
        f"chronod: error: Redis store redis://admin:***@127.0.0.1:{redis_server.port}/0: "
    )
    assert result.err.count("\n") == 1, result.err
