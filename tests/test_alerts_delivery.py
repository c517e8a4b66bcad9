"""Delivering the outbox (chronod.alerts.courier) to real receivers on loopback: a webhook (JSON,
signed; Slack), an SMTP server, a command recording its stdin, a healthchecks-style ping URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from chronod.alerts.courier import MAX_ATTEMPTS, Courier, backoff
from chronod.alerts.events import Notice, mail, sample_event
from chronod.alerts.flood import FloodGate
from chronod.alerts.model import event_kinds
from chronod.alerts.ping import run_uuid
from chronod.clock import ManualClock, SystemClock
from chronod.config import Config, load_config
from chronod.instants import slot_id
from chronod.metrics import ChronodMetrics
from chronod.store.base import (
    AttemptResult,
    FinishStatus,
    JobSync,
    Lease,
    Outcome,
    Store,
)
from chronod.store.sqlite import SQLiteStore
from chronod.tz import UTC
from tests.receivers import HTTPRecorder, SMTPRecorder, serve_http, serve_smtp
from tests.test_cli_surface import chronod
from tests.test_store_contract import item

SECRET = "a-shared-secret-of-some-length"
FAIL = AttemptResult(outcome=Outcome.FAILED, exit_code=3, output="disk full\n", error="exit 3")
OK = AttemptResult(outcome=Outcome.SUCCEEDED, exit_code=0, output="all good\n")


@pytest.fixture
def http() -> Iterator[HTTPRecorder]:
    yield from serve_http()


@pytest.fixture
def smtp() -> Iterator[SMTPRecorder]:
    yield from serve_smtp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def sqlite(tmp_path: Path, clock: ManualClock) -> Iterator[Store]:
    store = SQLiteStore(tmp_path / "state.db", clock=clock)  # time is driven, never waited for
    yield store
    store.close()


def config_for(tmp_path: Path, http: HTTPRecorder, smtp_port: int = 1, body: str = "") -> Config:
    recorder = tmp_path / "stdin.log"
    script = tmp_path / "record.py"
    script.write_text(
        "import os, sys\n"
        f"with open({str(recorder)!r}, 'ab') as f:\n"
        "    f.write(os.environ['CHRONOD_EVENT_ID'].encode() + b' ' + sys.stdin.buffer.read()"
        " + b'\\n')\n"
    )
    path = tmp_path / "schedules.toml"
    path.write_text(
        f"""
[chronod]
smtp = "smtp://127.0.0.1:{smtp_port}"
from = "chronod@example.org"

[notify.ops]
webhook = "{http.url}/hook/TOKEN"
secret = "{SECRET}"

[notify.chat]
webhook = "{http.url}/slack/TOKEN"
format = "slack"

[notify.mail]
email = ["oncall@example.org"]

[notify.pager]
command = ["{sys.executable}", "{script}"]

[defaults]
timezone = "UTC"

[jobs.backup]
every = "1m"
command = "true"
notify = ["ops"]
ping = "{http.url}/ping/5f1c"
{body}
"""
    )
    return load_config(path)


def lead(store: Store, config: Config) -> Lease:
    lease = store.acquire_lease("node", uuid.uuid4().hex, timedelta(minutes=5))
    assert lease is not None
    at = store.now() - timedelta(hours=2)
    store.sync_jobs(
        lease, [JobSync(name=n, fingerprint="fp", next_due=None) for n in config.jobs], at
    )
    store.set_event_kinds(lease, event_kinds(config.jobs))
    return lease


def end_run(
    store: Store, lease: Lease, result: AttemptResult, minutes: int, job: str = "backup"
) -> str:
    slot = store.now().replace(microsecond=0) - timedelta(minutes=100 - minutes)
    store.dispatch(lease, [item(job, slot, fingerprint="fp", next_due=slot)])
    claim = store.claim("db1:42", ["default"], uuid.uuid4().hex, timedelta(minutes=1), 0)
    assert claim is not None
    assert store.finish(claim.run.run_id, claim.token, result) is FinishStatus.ACCEPTED
    return slot_id(job, slot)


def courier(store: Store, config: Config, metrics: ChronodMetrics | None = None) -> Courier:
    return Courier(store, lambda: config, clock=SystemClock(), metrics=metrics)


def test_webhook_json_signed_with_idempotency_key_and_ping(
    tmp_path: Path, http: HTTPRecorder, sqlite: Store
) -> None:
    config = config_for(tmp_path, http)
    lease = lead(sqlite, config)
    run_id = end_run(sqlite, lease, FAIL, 1)
    metrics = ChronodMetrics()
    assert courier(sqlite, config, metrics).step(sqlite.now()) == 2  # started, failed
    start, hook, ping = http.received()
    assert hook.path == "/hook/TOKEN"
    event = json.loads(hook.body)
    assert (event["job"], event["run_id"], event["kind"], event["outcome"]) == (
        "backup",
        run_id,
        "failed",
        "failed",
    )
    assert (event["attempt"], event["exit_code"], event["host"]) == (1, 3, "db1:42")
    assert event["output_tail"] == "disk full\n"
    assert event["duration_seconds"] is not None
    assert event["id"] == f"{run_id}#1:failed" == hook.headers["Idempotency-Key"]
    expected = hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Chronod-Signature"] == f"sha256={expected}"
    # healthchecks: /fail with rid (a UUID from the run id), the output tail as the body
    url = urlsplit(ping.path)
    assert url.path == "/ping/5f1c/fail"
    assert parse_qs(url.query) == {"rid": [run_uuid(run_id)]}
    assert ping.body == b"disk full\n"
    assert start.path == f"/ping/5f1c/start?rid={run_uuid(run_id)}"
    assert sqlite.outbox_stats().depth == 0
    text = metrics.render().decode()
    assert 'chronod_notifications_total{channel="ops",result="ok"} 1.0' in text
    assert 'chronod_notifications_total{channel="ping",result="ok"} 2.0' in text
    assert "chronod_outbox_depth 0.0" in text


def test_ping_reports_success_and_recovered(
    tmp_path: Path, http: HTTPRecorder, sqlite: Store
) -> None:
    config = config_for(tmp_path, http)
    lease = lead(sqlite, config)
    first = end_run(sqlite, lease, OK, 1)
    failed = end_run(sqlite, lease, FAIL, 2)
    recovered = end_run(sqlite, lease, OK, 3)
    courier(sqlite, config).step(sqlite.now())
    pings = [urlsplit(r.path) for r in http.received() if r.path.startswith("/ping")]
    assert [(p.path, parse_qs(p.query)["rid"][0]) for p in pings] == [
        ("/ping/5f1c/start", run_uuid(first)),
        ("/ping/5f1c", run_uuid(first)),
        ("/ping/5f1c/start", run_uuid(failed)),
        ("/ping/5f1c/fail", run_uuid(failed)),
        ("/ping/5f1c/start", run_uuid(recovered)),
        ("/ping/5f1c", run_uuid(recovered)),
    ]
    hooks = [json.loads(r.body)["kind"] for r in http.received() if r.path.startswith("/hook")]
    assert hooks == ["failed", "recovered"]  # the default notify_on: not every success


def test_receiver_down_then_back_delivers_once(
    tmp_path: Path,
    http: HTTPRecorder,
    sqlite: Store,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = config_for(tmp_path, http)
    lease = lead(sqlite, config)
    end_run(sqlite, lease, FAIL, 1)
    http.status = 503
    metrics = ChronodMetrics()
    sender = courier(sqlite, config, metrics)
    now = sqlite.now()
    with caplog.at_level(logging.WARNING, logger="chronod.alerts"):
        sender.step(now)
    assert http.received() == []
    assert sqlite.events_due(10) == []  # not due again before its backoff
    assert sqlite.outbox_stats().depth == 2  # the start ping's and the failure's
    assert "TOKEN" not in caplog.text  # the webhook's path is its credential
    assert "HTTP 503" in caplog.text
    status = sender.status()["ops"]
    assert (status.failed, status.sent, status.last_ok_at) == (1, 0, None)
    assert status.last_error is not None
    assert "TOKEN" not in status.last_error
    http.status = 200
    clock.advance(backoff(1).total_seconds())
    sender.step(clock.now())
    assert [r.path.split("?")[0] for r in http.received()] == [
        "/ping/5f1c/start",
        "/hook/TOKEN",
        "/ping/5f1c/fail",
    ]
    assert sqlite.outbox_stats().depth == 0
    assert sender.status()["ops"].sent == 1
    text = metrics.render().decode()
    assert 'chronod_notifications_total{channel="ops",result="error"} 1.0' in text


def test_gives_up_after_bounded_attempts(tmp_path: Path, http: HTTPRecorder, sqlite: Store) -> None:
    config = config_for(tmp_path, http)
    lease = lead(sqlite, config)
    end_run(sqlite, lease, FAIL, 1)
    for event in sqlite.events_due(10):
        assert sqlite.settle_event(event.event_id, MAX_ATTEMPTS - 1, [], sqlite.now()) is True
    http.status = 500
    courier(sqlite, config).step(sqlite.now())
    assert sqlite.outbox_stats().depth == 0  # given up: bounded in time


def test_slack_command_and_email_channels(
    tmp_path: Path, http: HTTPRecorder, smtp: SMTPRecorder, sqlite: Store
) -> None:
    body = 'notify_on = ["failed"]\n'
    config = config_for(tmp_path, http, smtp.port, body)
    job = config.jobs["backup"]
    alerts = replace(job.alerts, notify=("chat", "mail", "pager"), ping=None)
    config = replace(config, jobs={"backup": replace(job, alerts=alerts)})
    lease = lead(sqlite, config)
    run_id = end_run(sqlite, lease, FAIL, 1)
    courier(sqlite, config).step(sqlite.now())
    [chat] = http.received()
    text = json.loads(chat.body)["text"]
    assert text.split("\n")[0].startswith("[chronod] backup failed (exit 3) on db1:42")
    assert "```disk full\n```" in text
    [(sender, recipients)] = smtp.envelopes
    assert (sender, recipients) == ("chronod@example.org", ["oncall@example.org"])
    [mail] = smtp.messages
    assert mail["Subject"].startswith("[chronod] backup failed")
    assert mail["X-Chronod-Event"] == f"{run_id}#1:failed"
    line = (tmp_path / "stdin.log").read_bytes().decode()
    key, _, payload = line.partition(" ")
    assert key == f"{run_id}#1:failed"
    assert json.loads(payload)["output_tail"] == "disk full\n"


def test_flood_control_folds_and_always_sends_recovered(
    tmp_path: Path, http: HTTPRecorder, sqlite: Store
) -> None:
    config = config_for(tmp_path, http, body='notify_every = "1h"\n')
    lease = lead(sqlite, config)
    sender = courier(sqlite, config)
    for minute in range(1, 5):
        end_run(sqlite, lease, FAIL, minute)
        sender.step(sqlite.now())
    end_run(sqlite, lease, OK, 5)
    sender.step(sqlite.now())
    hooks = [json.loads(r.body) for r in http.received() if r.path.startswith("/hook")]
    assert [(h["kind"], h["folded"]) for h in hooks] == [("failed", 0), ("recovered", 3)]
    pings = [r for r in http.received() if r.path.startswith("/ping")]
    assert len(pings) == 10  # a ping is never folded: the watcher needs every run
    assert sqlite.outbox_stats().depth == 0


def test_flood_gate_periods() -> None:
    gate = FloodGate()
    t0 = datetime(2026, 1, 1)
    every = timedelta(hours=1)
    assert gate.admit("a", "ops", "failed", every, t0) == 0
    assert gate.admit("a", "ops", "failed", every, t0 + timedelta(minutes=1)) is None
    assert gate.admit("a", "mail", "failed", every, t0 + timedelta(minutes=1)) == 0
    assert gate.admit("b", "ops", "failed", every, t0 + timedelta(minutes=1)) == 0
    assert gate.admit("a", "ops", "failed", every, t0 + timedelta(minutes=59)) is None
    assert gate.admit("a", "ops", "failed", every, t0 + every) == 2
    assert gate.admit("a", "ops", "failed", timedelta(0), t0 + every) == 0  # 0: never folds
    gate.forget({"b"})
    assert gate.admit("a", "ops", "failed", every, t0 + every) == 0


def test_notify_test_command(
    tmp_path: Path, http: HTTPRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, http)
    path = str(config.path)
    result = chronod(capsys, "--config", path, "notify", "test", "--channel", "ops")
    assert result.code == 0, result.err
    assert result.out.startswith("ops: delivered (webhook http://127.0.0.1:")
    assert "TOKEN" not in result.out
    [hook] = http.received()
    event = json.loads(hook.body)
    assert (event["test"], event["kind"], event["job"]) == (True, "failed", "chronod-test")
    assert hook.headers["Idempotency-Key"] == event["id"]
    assert hook.headers["X-Chronod-Signature"].startswith("sha256=")
    http.status = 500
    result = chronod(capsys, "--config", path, "notify", "test", "--channel", "ops")
    assert result.code == 1
    assert "answered HTTP 500" in result.out
    assert "TOKEN" not in result.out
    result = chronod(capsys, "--config", path, "notify", "test", "--channel", "opz")
    assert (result.code, result.err.strip()) == (
        2,
        "chronod: error: unknown channel 'opz'; did you mean 'ops'? "
        "(channels: ops, chat, mail, pager)",
    )


def test_status_shows_each_channels_last_delivery_without_secrets(
    tmp_path: Path, http: HTTPRecorder, sqlite: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, http)
    lease = lead(sqlite, config)
    end_run(sqlite, lease, FAIL, 1)
    http.status = 404
    courier(sqlite, config).step(sqlite.now())
    store = f"sqlite:///{tmp_path / 'state.db'}"
    result = chronod(capsys, "--config", str(config.path), "--store", store, "status")
    assert result.code == 0, result.err
    lines = result.out[result.out.index("CHANNEL") :].splitlines()
    assert lines[0].split() == ["CHANNEL", "LAST", "OK", "LAST", "ERROR"]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert set(rows) == {"ops", "chat", "mail", "pager", "ping", "outbox:"}
    assert "answered HTTP 404" in rows["ops"]
    assert rows["chat"].split()[1:] == ["-", "-"]  # declared, never used
    assert rows["outbox:"] == "outbox: 2 waiting, 0 dropped when full"
    assert "TOKEN" not in result.out
    assert "5f1c" not in result.out  # a ping URL's id is its credential
    as_json = json.loads(
        chronod(capsys, "--config", str(config.path), "--store", store, "status", "--json").out
    )
    ops = as_json["notifications"]["channels"][0]
    assert (ops["channel"], ops["last_ok_at"]) == ("ops", None)
    assert "HTTP 404" in ops["last_error"]


def test_mail_message_id_is_stable_and_well_formed() -> None:
    event = sample_event("backup", datetime(2026, 12, 7, 3, tzinfo=UTC), "db1:42")
    first = mail(Notice(event=event), "chronod@example.org", ("a@example.org",))
    again = mail(Notice(event=event, folded=3), "chronod@example.org", ("a@example.org",))
    assert first["Message-ID"] == again["Message-ID"]
    assert re.fullmatch(r"<[0-9a-f]{32}@chronod>", first["Message-ID"])
    assert first["X-Chronod-Event"] == event.event_id
