"""``chronod web``: the JSON API, the pages and the action guard, on both stores.

Each test starts the real server (:func:`chronod.web.start_web`) on 127.0.0.1:0 in a thread and
talks to it with urllib, like any client would. State is written with the store API directly (a
lease, synced jobs, runs claimed and finished by a registered worker), so the expectations are the
store's own records. On Redis the store URL carries a password (a private ACL user), so "no secret
in any response" covers the store password too. Timeline tests pin the window with ``at=``: the DST
change in New York on 2027-03-14 and the polar night in Tromsø do not depend on today's date.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from chronod.cli import main
from chronod.config import Config, load_config
from chronod.errors import UsageError
from chronod.instants import format_utc
from chronod.ops import run_stats
from chronod.runtime import store_settings
from chronod.store import open_store
from chronod.store.base import (
    AttemptResult,
    JobSync,
    Lease,
    Outcome,
    RunRecord,
    Store,
    WorkerInfo,
)
from chronod.web import WebHandle, start_web
from chronod.web.server import parse_bind
from chronod.web.timeline import MAX_TIMELINE_FIRES, fires_between
from tests.redis_server import RedisServer, free_port

TOKEN = "tok-" + "7f3a9c" * 6
ENV_SECRET = "env-secret-" + "d41d8c" * 3
STORE_PASSWORD = "store-pw-" + "9e107d" * 3
WORKER = "worker-host:4242"
LEASE_TTL = timedelta(seconds=60)
FAILED_OUTPUT = "".join(f"line {i}\n" for i in range(1, 9))

CONFIG = """\
[chronod]
namespace = "{namespace}"
{token_line}

[defaults]
timezone = "UTC"

[jobs.report]
every = "10m"
description = "the hourly report"
command = "true"
env = {{ API_KEY = "{env_secret}" }}

[jobs.ny-backup]
cron = "30 2 * * *"
timezone = "America/New_York"
command = "true"

[jobs.tromso-sunrise]
solar = "sunrise"
latitude = 69.6492
longitude = 18.9553
timezone = "Europe/Oslo"
command = "true"

[jobs.fast]
every = "10s"
command = "true"

[jobs.load]
after = "report"
command = "true"
"""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


@dataclass
class Site:
    """A running server plus the config and store it serves; records every body it receives."""

    handle: WebHandle
    config_file: Path
    store_url: str
    bodies: list[bytes] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.handle.url.rstrip("/")

    @property
    def config(self) -> Config:
        return load_config(self.config_file)

    def open(self) -> Store:
        return open_store(store_settings(self.config, self.store_url))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        request = Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urlopen(request, timeout=10) as response:
                reply = Reply(response.status, _lower(response.headers), response.read())
        except HTTPError as error:
            reply = Reply(error.code, _lower(error.headers), error.read())
        self.bodies.append(reply.body)
        return reply

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def get_json(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, reply
        return reply.json()

    def post(
        self,
        path: str,
        token: str | None = TOKEN,
        *,
        body: bytes = b"{}",
        content_type: str = "application/json",
    ) -> Reply:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", path, body=body, headers=headers)


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def store_url(store_kind: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if store_kind == "sqlite":
        return f"sqlite:///{directory / 'state.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    # A private ACL user with a password: the URL holds a secret that must never be shown.
    user = f"web{uuid.uuid4().hex[:8]}"
    server.client().acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{STORE_PASSWORD}"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
    )
    return f"redis://{user}:{STORE_PASSWORD}@127.0.0.1:{server.port}/0"


def write_config(directory: Path, *, token: str | None) -> Path:
    config_file = directory / "schedules.toml"
    config_file.write_text(
        CONFIG.format(
            namespace=f"t{uuid.uuid4().hex[:12]}",
            token_line=f'web_token = "{token}"' if token else "",
            env_secret=ENV_SECRET,
        )
    )
    return config_file


def start_site(config_file: Path, url: str, token: str | None = None) -> Site:
    handle = start_web(config_file, url, "127.0.0.1:0", token=token or "")
    return Site(handle, config_file, url)


@pytest.fixture
def site(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    monkeypatch.delenv("CHRONOD_WEB_TOKEN", raising=False)
    started = start_site(
        write_config(tmp_path, token=TOKEN), store_url(store_kind, request, tmp_path)
    )
    yield started
    started.handle.stop()


@pytest.fixture
def readonly_site(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    monkeypatch.delenv("CHRONOD_WEB_TOKEN", raising=False)
    started = start_site(
        write_config(tmp_path, token=None), store_url(store_kind, request, tmp_path)
    )
    yield started
    started.handle.stop()


# -- seeding ------------------------------------------------------------------------------------


def lead(store: Store, config: Config) -> Lease:
    lease = store.acquire_lease("leader-host:1", uuid.uuid4().hex, LEASE_TTL)
    assert lease is not None
    now = store.now()
    syncs = [
        JobSync(name=j.name, fingerprint=j.fingerprint, next_due=j.schedule.next_after(now))
        for j in config.jobs.values()
    ]
    store.sync_jobs(lease, syncs, now)
    return lease


def run_manual(store: Store, config: Config, job: str, result: AttemptResult) -> str:
    """A manual run of ``job``, claimed by :data:`WORKER` and finished with ``result``."""
    found = config.jobs[job]
    run = store.enqueue_manual(job, found.queue, found.digest, found.overlap, found.max_attempts)
    claim = store.claim(WORKER, [found.queue], uuid.uuid4().hex, LEASE_TTL, wait=0)
    assert claim is not None
    assert claim.run.run_id == run.run_id
    store.finish(run.run_id, claim.token, result)
    return run.run_id


FAILED = AttemptResult(outcome=Outcome.FAILED, exit_code=3, output=FAILED_OUTPUT, error="boom")
SUCCEEDED = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="done\n")


def seed(site: Site) -> tuple[Lease, str, str]:
    """A leader, a registered worker, and report run twice: failed, then succeeded."""
    config = site.config
    with site.open() as store:
        lease = lead(store, config)
        failed = run_manual(store, config, "report", FAILED)
        succeeded = run_manual(store, config, "report", SUCCEEDED)
        store.register_worker(
            WorkerInfo(
                worker=WORKER, queues=("default",), seen_at=store.now(), running=0, concurrency=2
            )
        )
    return lease, failed, succeeded


# -- reading ------------------------------------------------------------------------------------


def test_status(site: Site) -> None:
    lease, _, _ = seed(site)
    status = site.get_json("/api/v1/status")
    assert status["leader"]["node"] == "leader-host:1"
    assert status["leader"]["epoch"] == lease.epoch
    assert 0 < status["leader"]["lease_left_s"] <= 60
    assert [w["worker"] for w in status["workers"]] == [WORKER]
    assert status["queues"] == {"default": 0}
    assert [j["job"] for j in status["jobs"]] == [
        "report",
        "ny-backup",
        "tromso-sunrise",
        "fast",
        "load",
    ]
    report = status["jobs"][0]
    assert report["last_outcome"] == "succeeded"
    assert report["loaded"] is True
    assert status["actions_enabled"] is True
    assert status["config_stale"] is False


def test_jobs_table_data(site: Site) -> None:
    _, failed, succeeded = seed(site)
    jobs = {j["job"]: j for j in site.get_json("/api/v1/jobs")["jobs"]}
    report = jobs["report"]
    assert report["schedule"] == "every 10m"
    assert report["timezone"] == "UTC"
    assert report["description"] == "the hourly report"
    assert report["paused"] is False
    assert report["next_fire"] is not None
    assert report["stats"] == {
        "runs": 2,
        "ran": 2,
        "succeeded": 1,
        "success_rate": 0.5,
        "outcomes": {"failed": 1, "succeeded": 1},
    }
    assert report["last_run"]["run_id"] == succeeded
    assert "output" not in report["last_run"]
    assert jobs["fast"]["stats"]["success_rate"] is None  # nothing ran: no rate, not 0 %
    assert jobs["ny-backup"]["schedule"] == "at 02:30 every day"

    one = site.get_json("/api/v1/jobs/report")
    assert one["stats"] == report["stats"]
    assert len(one["upcoming"]) == 5
    assert one["upcoming"][0]["utc"] == report["next_fire"]
    assert failed != succeeded


def test_a_job_with_after_names_and_links_its_upstream(site: Site) -> None:
    seed(site)
    load = {j["job"]: j for j in site.get_json("/api/v1/jobs")["jobs"]}["load"]
    # app.js draws "after report (succeeded)" with report a link from these (scheduleNodes)
    assert (load["after"], load["when"], load["schedule"]) == (
        ["report"],
        "succeeded",
        "after report (succeeded)",
    )
    assert load["next_fire"] is None
    assert b"after report (succeeded), UTC" in site.get("/jobs/load").body
    script = site.get("/static/app.js").body
    assert b"function scheduleNodes(job)" in script
    assert b'class: "after-link", href: `/jobs/${encodeURIComponent(name)}`' in script


def test_history(site: Site) -> None:
    _, failed, succeeded = seed(site)
    history = site.get_json("/api/v1/jobs/report/history?limit=10")
    assert history["job"] == "report"
    assert history["timezone"] == "UTC"
    assert history["live"] == []
    newest, oldest = history["runs"]
    assert (newest["run_id"], oldest["run_id"]) == (succeeded, failed)
    assert oldest["outcome"] == "failed"
    assert oldest["exit_code"] == 3
    assert oldest["error"] == "boom"
    assert oldest["output"] == FAILED_OUTPUT
    assert oldest["worker"] == WORKER
    assert oldest["attempt"] == 1
    assert oldest["manual"] is True
    assert oldest["duration_s"] is not None
    assert oldest["slot_local"].endswith("+00:00")
    assert oldest["finished_local"] is not None
    assert [r["run_id"] for r in site.get_json("/api/v1/jobs/report/history?limit=1")["runs"]] == [
        succeeded
    ]
    assert site.get("/api/v1/jobs/report/history?limit=0").status == 400
    assert site.get("/api/v1/jobs/nope/history").status == 404


# -- timeline -----------------------------------------------------------------------------------


def timeline_job(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [j for j in data["jobs"] if j["job"] == name]
    assert len(found) == 1, name
    return found[0]


def test_timeline_across_spring_forward(site: Site) -> None:
    """02:30 does not exist in New York on 2027-03-14: the fire moves to 03:00 EDT, with a note."""
    data = site.get_json("/api/v1/timeline?at=2027-03-13T12:00:00Z&hours=48&past=0&zone=job")
    assert (data["at"], data["start"], data["end"]) == (
        "2027-03-13T12:00:00Z",
        "2027-03-13T12:00:00Z",
        "2027-03-15T12:00:00Z",
    )
    ny = timeline_job(data, "ny-backup")
    assert [(f["utc"], f["local"]) for f in ny["fires"]] == [
        ("2027-03-14T07:00:00Z", "2027-03-14T03:00:00-04:00"),
        ("2027-03-15T06:30:00Z", "2027-03-15T02:30:00-04:00"),
    ]
    moved, regular = ny["fires"]
    assert moved["at"] == moved["local"]
    assert moved["note"] is not None
    assert "DST gap" in moved["note"]
    assert "03:00 EDT" in moved["note"]
    assert regular["note"] is None
    assert [(o["abbreviation"], o["offset_s"], o["start"]) for o in ny["offsets"]] == [
        ("EST", -5 * 3600, "2027-03-13T12:00:00Z"),
        ("EDT", -4 * 3600, "2027-03-14T07:00:00Z"),
    ]
    assert ny["skipped_days"] == []

    utc = timeline_job(
        site.get_json("/api/v1/timeline?at=2027-03-13T12:00:00Z&hours=48&zone=utc"), "ny-backup"
    )
    assert [f["at"] for f in utc["fires"]] == ["2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z"]
    assert [(o["abbreviation"], o["offset_s"]) for o in utc["offsets"]] == [("UTC", 0)]


def test_timeline_polar_night(site: Site) -> None:
    """No sunrise in Tromsø from late November to mid January: those days are marked skipped."""
    data = site.get_json("/api/v1/timeline?at=2026-12-10T00:00:00Z&hours=168&past=0")
    tromso = timeline_job(data, "tromso-sunrise")
    assert tromso["fires"] == []
    (night,) = tromso["skipped_days"]
    # 2026-12-10T00:00Z is 01:00 CET: the window covers local dates 12-10 to 12-17 (01:00).
    assert (night["first"], night["last"]) == ("2026-12-10", "2026-12-17")
    assert (night["start"], night["end"]) == ("2026-12-09T23:00:00Z", "2026-12-17T23:00:00Z")
    assert "polar night" in night["note"]

    # The night ends in the window: skipped days up to 2027-01-14, then the first sunrise, noted.
    data = site.get_json("/api/v1/timeline?at=2027-01-11T12:00:00Z&hours=168&past=0")
    tromso = timeline_job(data, "tromso-sunrise")
    (night,) = tromso["skipped_days"]
    assert (night["first"], night["last"]) == ("2027-01-11", "2027-01-14")
    first = tromso["fires"][0]
    assert first["local"].startswith("2027-01-15T")
    assert "polar night" in first["note"]
    # One sunrise a day from the 15th; the window ends 2027-01-18 13:00 CET, after that day's.
    assert [f["local"][:10] for f in tromso["fires"]] == [
        "2027-01-15",
        "2027-01-16",
        "2027-01-17",
        "2027-01-18",
    ]
    assert all(f["note"] is None for f in tromso["fires"][1:])


def test_timeline_runs_and_dense_jobs(site: Site) -> None:
    _, failed, succeeded = seed(site)
    data = site.get_json("/api/v1/timeline?hours=24")
    start, end = (datetime.fromisoformat(data[k].replace("Z", "+00:00")) for k in ("start", "end"))
    assert end - start == timedelta(hours=30)  # past defaults to a quarter of the hours ahead
    report = timeline_job(data, "report")
    assert [r["run_id"] for r in report["runs"]] == [failed, succeeded]
    assert [r["outcome"] for r in report["runs"]] == ["failed", "succeeded"]
    assert all("output" not in r for r in report["runs"])
    assert all(r["started_at"] and r["finished_at"] for r in report["runs"])
    assert not report["more_fires"]
    config = site.config
    at = datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
    expected, more = fires_between(config.jobs["report"], at, end)
    assert [f["utc"] for f in report["fires"]] == [format_utc(f.at) for f in expected]
    assert not more
    assert len(report["fires"]) in (144, 145)  # every 10 minutes for 24 h, ends inclusive
    fast = timeline_job(data, "fast")  # every 10 s: 8,640 fires in 24 h
    assert fast["more_fires"] is True
    assert len(fast["fires"]) == MAX_TIMELINE_FIRES


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("hours=0", "hours"),
        ("hours=200", "hours"),
        ("hours=abc", "hours"),
        ("past=-1", "past"),
        ("zone=local", "zone"),
        ("at=yesterday", "at"),
        ("at=2027-03-13T12:00:00", "at"),  # no offset: ambiguous
        ("at=9999-12-31T00:00:00Z", "at: expected an instant from 1970-01-01 to 9998-12-31"),
        ("at=0001-01-01T00:00:00Z", "at: expected an instant from 1970-01-01"),
    ],
)
def test_timeline_bad_parameters(site: Site, query: str, reason: str) -> None:
    reply = site.get(f"/api/v1/timeline?{query}")
    assert reply.status == 400
    assert reply.json() == {"error": reply.json()["error"], "status": 400}
    assert reply.json()["error"].startswith(reason)
    assert "\n" not in reply.json()["error"]


def test_timeline_at_the_end_of_the_range(site: Site) -> None:
    data = site.get_json("/api/v1/timeline?at=9998-12-31T00:00:00Z&hours=168")
    assert data["at"] == "9998-12-31T00:00:00Z"
    for job in data["jobs"]:
        assert all(fire["utc"] < "9999-01-01" for fire in job["fires"])


# -- actions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "longer", "basic", "bare"],
)
def test_actions_refused_without_the_token(site: Site, headers: dict[str, str]) -> None:
    for action in ("trigger", "pause", "resume"):
        reply = site.request(
            "POST",
            f"/api/v1/jobs/report/{action}",
            body=b"{}",
            headers={"Content-Type": "application/json", **headers},
        )
        assert reply.status == 403, (action, reply)
        assert "token" in reply.json()["error"]
    assert site.post("/api/v1/auth", token="wrong").status == 403
    with site.open() as store:
        assert store.live_runs("report") == []
        assert store.history("report", 10) == []
        state = store.job_states().get("report")
        assert state is None or not state.paused


def test_actions_accepted_with_the_token(site: Site) -> None:
    lead_store = site.open()
    with lead_store:
        lead(lead_store, site.config)
    assert site.post("/api/v1/auth").json() == {"ok": True}

    reply = site.post("/api/v1/jobs/report/trigger")
    assert reply.status == 202, reply
    run = reply.json()["run"]
    assert run["manual"] is True
    assert run["state"] == "queued"
    history = site.get_json("/api/v1/jobs/report/history")
    assert [r["run_id"] for r in history["live"]] == [run["run_id"]]
    assert history["live"][0]["manual"] is True

    reply = site.post("/api/v1/jobs/report/pause")
    assert reply.status == 200
    assert reply.json()["paused"] is True
    assert reply.json()["changed"] is True
    jobs = {j["job"]: j for j in site.get_json("/api/v1/jobs")["jobs"]}
    assert jobs["report"]["paused"] is True
    assert site.post("/api/v1/jobs/report/pause").json()["changed"] is False

    reply = site.post("/api/v1/jobs/report/resume")
    assert reply.json()["paused"] is False
    jobs = {j["job"]: j for j in site.get_json("/api/v1/jobs")["jobs"]}
    assert jobs["report"]["paused"] is False
    with site.open() as store:
        assert not store.job_states()["report"].paused

    assert site.post("/api/v1/jobs/nope/trigger").status == 404


def test_actions_refused_where_no_scheduler_loaded_the_job(site: Site) -> None:
    """The page's buttons refuse, like the CLI, a store no scheduler reads the job from: 409 and
    the one-line reason naming the store; nothing is written."""
    with site.open() as store:
        store.job_states()  # the store exists (SQLite: created), but no scheduler loaded a job
    for action in ("trigger", "pause", "resume"):
        reply = site.post(f"/api/v1/jobs/report/{action}")
        assert reply.status == 409, (action, reply)
        error = reply.json()["error"]
        assert error.startswith(f"refusing to {action} report: no scheduler has loaded it on ")
        assert STORE_PASSWORD not in error
    with site.open() as store:
        assert store.live_runs("report") == []
        assert "report" not in store.job_states()


def test_the_page_never_creates_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page started on a config whose SQLite store does not exist (no daemon used it, or the
    page reads another config than the daemon) shows the configured jobs and says so; its
    buttons refuse; no file is left behind for an operator to mistake for the daemon's."""
    monkeypatch.delenv("CHRONOD_WEB_TOKEN", raising=False)
    path = tmp_path / "state.db"
    site = start_site(write_config(tmp_path, token=TOKEN), f"sqlite:///{path}")
    try:
        status = site.get_json("/api/v1/status")
        [warning] = status["warnings"]
        assert warning.startswith("this store does not exist, so no chronod process uses it")
        assert {job["job"] for job in status["jobs"]} == set(site.config.jobs)
        assert site.get_json("/api/v1/jobs")["jobs"]
        assert site.get_json("/api/v1/timeline")["jobs"]
        history = site.get("/api/v1/jobs/report/history")
        assert history.status == 409
        assert "does not exist: no chronod process uses this store yet" in history.json()["error"]
        reply = site.post("/api/v1/jobs/report/pause")
        assert reply.status == 409
        assert reply.json()["error"].startswith("refusing to pause report: store ")
        assert not path.exists()
    finally:
        site.handle.stop()


def test_actions_disabled_without_a_configured_token(readonly_site: Site) -> None:
    assert readonly_site.get_json("/api/v1/status")["actions_enabled"] is False
    reply = readonly_site.post("/api/v1/jobs/report/trigger", token="")
    assert reply.status == 403
    assert "disabled" in reply.json()["error"]
    # Whatever is sent: an empty configured token must never match an empty given one.
    assert (
        readonly_site.request(
            "POST",
            "/api/v1/jobs/report/trigger",
            body=b"{}",
            headers={"Content-Type": "application/json", "Authorization": "Bearer "},
        ).status
        == 403
    )
    assert b'data-actions="off"' in readonly_site.get("/").body
    with readonly_site.open() as store:
        assert store.live_runs("report") == []


def test_token_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRONOD_WEB_TOKEN", "from-env")
    config_file = write_config(tmp_path, token=TOKEN)
    handle = start_web(config_file, f"sqlite:///{tmp_path / 'state.db'}", "127.0.0.1:0")
    site = Site(handle, config_file, f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert site.post("/api/v1/auth", token=TOKEN).status == 403
        assert site.post("/api/v1/auth", token="from-env").status == 200
    finally:
        handle.stop()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"job=report", "application/x-www-form-urlencoded", 415),
        (b"{}", "text/plain", 415),
        (b"{not json", "application/json", 400),
        (b"{}" + b" " * (16 * 1024), "application/json", 413),
    ],
    ids=["form", "text", "invalid-json", "oversized"],
)
def test_action_bodies_must_be_small_json(
    site: Site, body: bytes, content_type: str, status: int
) -> None:
    reply = site.post("/api/v1/jobs/report/trigger", body=body, content_type=content_type)
    assert reply.status == status
    assert reply.json()["status"] == status
    with site.open() as store:
        assert store.live_runs("report") == []


def test_post_without_a_length_is_refused(site: Site) -> None:
    host, port = site.handle.address
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.putrequest("POST", "/api/v1/jobs/report/trigger")
        connection.putheader("Authorization", f"Bearer {TOKEN}")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        connection.send(b"2\r\n{}\r\n0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 411
    finally:
        connection.close()


# -- pages, routes, headers, secrets -------------------------------------------------------------


def test_pages_and_static_files(site: Site) -> None:
    page = site.get("/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script src="/static/app.js" defer></script>' in page.body
    assert b'data-actions="on"' in page.body
    assert b"<script>" not in page.body  # the CSP forbids inline script: there must be none
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"

    job = site.get("/jobs/ny-backup")
    assert job.status == 200
    assert b'data-job="ny-backup"' in job.body
    assert b"at 02:30 every day, America/New_York" in job.body
    assert site.get("/jobs/nope").status == 404
    assert site.get("/jobs/%3Cscript%3E").body.count(b"<script>") == 0  # escaped, not injected

    script = site.get("/static/app.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"/api/v1/timeline" in script.body
    style = site.get("/static/style.css")
    assert style.headers["content-type"].startswith("text/css")
    assert site.get("/static/evil.js").status == 404


def test_api_answers_are_never_cached(site: Site) -> None:
    for path in ("/api/v1/status", "/api/v1/jobs", "/api/v1/timeline", "/api/v1/nope"):
        reply = site.get(path)
        assert reply.headers["cache-control"] == "no-store", path
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in reply.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/api/v1/nope", 404),
        ("GET", "/api/v2/status", 404),
        ("GET", "/api/v1/jobs/nope", 404),
        ("GET", "/api/v1/jobs/report/trigger", 405),
        ("POST", "/api/v1/status", 405),
        ("DELETE", "/api/v1/jobs/report", 405),
    ],
)
def test_unknown_routes_and_methods_answer_json(
    site: Site, method: str, path: str, status: int
) -> None:
    reply = site.request(method, path, body=b"{}" if method == "POST" else None)
    assert reply.status == status
    assert reply.json() == {"error": reply.json()["error"], "status": status}


def test_head_is_a_get_without_a_body(site: Site) -> None:
    for path in ("/", "/api/v1/status"):
        full = site.get(path)
        head = site.request("HEAD", path)
        assert (head.status, head.body) == (200, b"")
        assert head.headers["content-type"] == full.headers["content-type"]
        assert int(head.headers["content-length"]) > 0
    assert site.request("HEAD", "/nope").status == 404


def test_other_host_names_are_refused_on_loopback(site: Site) -> None:
    """A page elsewhere that rebinds its DNS name to 127.0.0.1 must not read the API."""
    assert site.get("/api/v1/status", Host="attacker.example").status == 403
    assert site.get("/api/v1/status", Host="attacker.example:8750").status == 403
    # A loopback address at the start is not enough: the whole header names the host.
    for trick in ("[::1]evil.example", "[::1]:80evil", "127.0.0.1evil", "localhost:80:81", "[::1"):
        assert site.get("/api/v1/status", Host=trick).status == 403, trick
    assert site.get("/api/v1/status", Host="[::1]:8750").status == 200
    _, port = site.handle.address
    assert site.get("/api/v1/status", Host=f"localhost:{port}").status == 200
    assert site.get("/api/v1/status", Host=f"127.0.0.1:{port}").status == 200


def test_no_secret_in_any_response(site: Site) -> None:
    seed(site)
    site.post("/api/v1/jobs/report/trigger")
    site.post("/api/v1/jobs/report/trigger", token="wrong")
    for path in (
        "/",
        "/jobs/report",
        "/static/app.js",
        "/api/v1/status",
        "/api/v1/jobs",
        "/api/v1/jobs/report",
        "/api/v1/jobs/report/history?limit=1000",
        "/api/v1/timeline?hours=168&past=168",
        "/api/v1/nope",
    ):
        assert site.get(path).status in (200, 404)
    assert len(site.bodies) >= 11
    everything = b"\n".join(site.bodies)
    for secret in (TOKEN, ENV_SECRET, STORE_PASSWORD):
        assert secret.encode() not in everything, secret
    status = site.get_json("/api/v1/status")
    if site.store_url.startswith("redis"):
        assert ":***@" in status["store"]  # shown, redacted


def test_store_unreachable_is_a_503(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, token=TOKEN)
    url = f"redis://127.0.0.1:{free_port()}/0"
    handle = start_web(config_file, url, "127.0.0.1:0", token="")
    site = Site(handle, config_file, url)
    try:
        reply = site.get("/api/v1/status")
        assert reply.status == 503
        assert reply.json()["error"].startswith("store unavailable")
        assert site.get("/").status == 200  # the page itself still loads, and says so
    finally:
        handle.stop()


def test_config_edits_are_picked_up_and_bad_ones_kept_out(site: Site) -> None:
    original = site.config_file.read_text()
    site.config_file.write_text(original + '\n[jobs.added]\nevery = "1h"\ncommand = "true"\n')
    names = [j["job"] for j in site.get_json("/api/v1/jobs")["jobs"]]
    assert "added" in names
    site.config_file.write_text(original + f'\n[jobs.broken]\nevery = "{ENV_SECRET}"\n')
    status = site.get_json("/api/v1/status")
    assert status["config_stale"] is True
    assert "added" in [j["job"] for j in status["jobs"]]  # the last good config, still served
    assert ENV_SECRET.encode() not in b"\n".join(site.bodies)


# -- binding and the command line -----------------------------------------------------------------


def test_parse_bind() -> None:
    assert (parse_bind("127.0.0.1:8750").host, parse_bind("127.0.0.1:8750").port) == (
        "127.0.0.1",
        8750,
    )
    assert parse_bind("[::1]:0").host == "::1"
    assert parse_bind("[::1]:0").loopback
    assert parse_bind("localhost:1").loopback
    assert not parse_bind("0.0.0.0:8750").loopback
    for bad in ("8750", ":8750", "host:", "host:http", "host:70000", "::1:8750"):
        with pytest.raises(UsageError):
            parse_bind(bad)


def test_cli_reports_a_bad_bind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = write_config(tmp_path, token=None)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config_file), "web", "--bind", "nowhere"])
    assert exit_info.value.code == 2
    assert "--bind: expected HOST:PORT" in capsys.readouterr().err


def test_ipv6_loopback(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, token=None)
    try:
        handle = start_web(config_file, f"sqlite:///{tmp_path / 's.db'}", "[::1]:0", token="")
    except OSError as exc:  # a host without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert handle.url.startswith("http://[::1]:")
        with urlopen(handle.url + "api/v1/status", timeout=10) as response:
            assert json.loads(response.read())["leader"] is None
    finally:
        handle.stop()


# -- pure helpers -------------------------------------------------------------------------------


def record(run_id: str, state: Outcome, attempt: int = 1) -> RunRecord:
    at = datetime(2027, 1, 1, tzinfo=timezone.utc)
    return RunRecord(
        run_id=run_id,
        job="report",
        slot=at,
        manual=False,
        state=state,
        queue="default",
        digest="d",
        epoch=1,
        attempt=attempt,
        max_attempts=3,
        created_at=at,
    )


def test_run_stats_count_each_run_once_by_its_final_outcome() -> None:
    history = [  # newest first, one entry per attempt end
        record("a", Outcome.SUCCEEDED, attempt=2),
        record("a", Outcome.FAILED, attempt=1),  # retried: not a failure of run a
        record("b", Outcome.FAILED, attempt=1),  # b is being retried: no final outcome yet
        record("c", Outcome.TIMED_OUT),
        record("d", Outcome.SKIPPED),
        record("e", Outcome.MISSED),
    ]
    stats = run_stats(history, live=["b"])
    assert (stats.runs, stats.ran, stats.succeeded) == (4, 2, 1)
    assert stats.success_rate == 0.5
    assert dict(stats.outcomes) == {"succeeded": 1, "timed-out": 1, "skipped": 1, "missed": 1}
    assert run_stats([record("d", Outcome.SKIPPED)]).success_rate is None
