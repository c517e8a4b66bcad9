"""``celery`` jobs end to end (issue 15): real ``chronod run`` and real ``celery worker`` processes.

The broker is the private redis-server of the fixtures (database 1; chronod's own store is SQLite
beside the config), or RabbitMQ on 127.0.0.1:5672 where one answers (a vhost-free test that uses
queue names of its own). The Celery worker runs :mod:`tests.celery_app`, whose tasks append one
JSON line per execution to a file: the tests judge by that file, by ``chronod history`` and by the
processes' logs, waiting on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod.tz import UTC
from tests.procs import REPO, ChronodProcess, Processes, wait_until
from tests.redis_server import RedisServer, free_port
from tests.test_process_ops import scrape, value

pytestmark = [pytest.mark.process, pytest.mark.redis]
pytest.importorskip("celery", reason="the celery extra is not installed")

STARTUP = 40.0  # a Celery worker on a loaded 2-core machine takes seconds to import and connect
SETTLE = 30.0


@dataclass
class Project:
    """One test's Celery side: broker URL, the executions file, the config chronod runs."""

    directory: Path
    broker: str
    procs: Processes

    @property
    def out(self) -> Path:
        return self.directory / "executions.jsonl"

    @property
    def config(self) -> Path:
        return self.directory / "schedules.toml"

    @property
    def store(self) -> str:
        return f"sqlite://{self.directory / 'state' / 'chronod.db'}"

    def executions(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def write_config(self, jobs: str, *, celery: str | None = None, daemon: str = "") -> None:
        table = celery or f"broker = {json.dumps(self.broker)}"
        self.config.write_text(
            # The store in the file: the hook in the Celery worker reads it from there.
            f'[chronod]\nlease = "2s"\nstore = "{self.store}"\n{daemon}\n\n'
            f"[chronod.celery]\n{table}\n\n"
            f'[defaults]\ntimezone = "UTC"\n\n{jobs}'
        )

    def celery_worker(
        self,
        *,
        hook: bool = False,
        queues: str = "celery,reports",
        pool: str = "solo",
        env: dict[str, str] | None = None,
    ) -> ChronodProcess:
        env = {"CHRONOD_TEST_BROKER": self.broker, "CHRONOD_TEST_OUT": str(self.out), **(env or {})}
        if hook:
            env["CHRONOD_TEST_HOOK"] = str(self.config)
        worker = self.procs.command(
            "celery",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "-P",
                pool,
                *(["-c", "2"] if pool == "prefork" else []),
                "-Q",
                queues,
                "-n",
                f"w{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
            env=env,
        )
        worker.wait_for_log(r"ready\.", timeout=STARTUP)
        return worker

    def chronod(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chronod", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )

    def history(self, job: str) -> list[dict[str, Any]]:
        done = self.chronod("--store", self.store, "history", "--job", job, "--json")
        assert done.returncode == 0, done.stderr
        runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
        return runs


@pytest.fixture
def project(tmp_path: Path, procs: Processes, redis_server: RedisServer) -> Project:
    client = redis_server.client()
    client.flushall()
    return Project(tmp_path, f"redis://{redis_server.address}/1", procs)


def rabbitmq_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


EVERY_SECOND = """
[jobs.digest]
every = "1s"
celery = "reports.tasks.send_digest"
args = [7]
kwargs = { format = "html" }
queue = "reports"
grace = "5s"
"""


def test_every_second_runs_once_per_slot_on_an_unmodified_worker(project: Project) -> None:
    project.write_config(EVERY_SECOND)
    project.celery_worker()
    daemon = project.procs.run(project.config, project.store, workers=1)
    wait_until(lambda: len(project.executions()) >= 4, timeout=STARTUP, what="four executions")
    daemon.term()
    daemon.wait_exit(SETTLE)
    done = project.executions()
    ids = Counter(line["id"] for line in done)
    assert all(n == 1 for n in ids.values()), ids
    for line in done:
        # The task id is the slot's run id; the slot, attempt and epoch travel as headers.
        assert line["id"] == f"digest@{line['headers']['chronod_slot']}"
        assert line["headers"]["chronod_job"] == "digest"
        assert line["headers"]["chronod_attempt"] == 1
        assert line["headers"]["chronod_epoch"] >= 1
        assert (line["args"], line["kwargs"], line["queue"]) == ([7], {"format": "html"}, "reports")
        slot = datetime.fromisoformat(line["headers"]["chronod_slot"].replace("Z", "+00:00"))
        assert datetime.fromisoformat(line["expires"]) == slot + timedelta(seconds=5)  # grace
    sent = [run for run in project.history("digest") if run["outcome"] == "sent"]
    assert {run["run_id"] for run in sent} >= set(ids)


@pytest.mark.skipif(not rabbitmq_reachable(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_rabbitmq_broker_with_publisher_confirms(project: Project) -> None:
    queue = f"chronod-test-{uuid.uuid4().hex[:8]}"
    project.broker = "amqp://guest:guest@127.0.0.1:5672//"
    project.write_config(EVERY_SECOND.replace('queue = "reports"', f'queue = "{queue}"'))
    project.celery_worker(queues=queue)
    daemon = project.procs.run(project.config, project.store, workers=1)
    wait_until(lambda: len(project.executions()) >= 2, timeout=STARTUP, what="two executions")
    daemon.term()
    daemon.wait_exit(SETTLE)
    ids = Counter(line["id"] for line in project.executions())
    assert all(n == 1 for n in ids.values()), ids
    assert {line["queue"] for line in project.executions()} == {queue}


def one_slot_job(name: str, task: str, at: datetime, extra: str = "") -> str:
    """A job whose only slot is ``at`` (a whole second a few seconds ahead: after the load)."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'[jobs.{name}]\nevery = "1s"\nstart = "{stamp}"\nend = "{stamp}"\n'
        f'celery = "{task}"\nqueue = "reports"\ngrace = "1m"\n{extra}\n'
    )


def soon(seconds: int = 4) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


def hook_metrics(tmp: Path, multiprocess: bool = False) -> tuple[str, dict[str, str]]:
    """The URL of the hook's metrics endpoint, and the Celery worker's environment for it."""
    address = f"127.0.0.1:{free_port()}"
    env = {"CHRONOD_TEST_HOOK_METRICS": address}
    if multiprocess:
        (tmp / "prometheus").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "prometheus")
    return f"http://{address}/metrics", env


def test_hook_records_success_and_failure_in_history(project: Project) -> None:
    at = soon()
    project.write_config(
        one_slot_job("digest", "reports.tasks.send_digest", at, "args = [2]")
        + one_slot_job("broken", "reports.tasks.explode", at)
    )
    # prefork: the hook works in pool children, and their counts reach the parent's endpoint.
    url, env = hook_metrics(project.directory, multiprocess=True)
    project.celery_worker(hook=True, pool="prefork", env=env)
    daemon = project.procs.run(project.config, project.store, workers=1)

    def ended(job: str) -> dict[str, Any] | None:
        found = [r for r in project.history(job) if r["outcome"] not in ("sent", None)]
        return found[0] if found else None

    done = wait_until(lambda: ended("digest"), timeout=STARTUP, what="the digest's outcome")
    failed = wait_until(lambda: ended("broken"), timeout=SETTLE, what="the failure's outcome")
    daemon.term()
    assert done["outcome"] == "succeeded"
    assert done["run_id"] == f"digest@{at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert done["duration_s"] is not None
    assert done["worker"].startswith("w")  # the Celery worker's name
    assert failed["outcome"] == "failed"
    assert failed["error"] == "ValueError: the digest template is missing"
    shown = project.chronod("--store", project.store, "history", "--job", "broken")
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout
    assert "ValueError: the digest template is missing" in shown.stdout
    # Each run: 'sent' by the chronod worker, then what the Celery worker did.
    assert [r["outcome"] for r in project.history("digest")] == ["succeeded", "sent"]
    families = scrape(url)
    assert value(families, "chronod_runs_total", job="digest", outcome="succeeded") == 1
    assert value(families, "chronod_runs_total", job="broken", outcome="failed") == 1
    assert value(families, "chronod_run_duration_seconds_count", job="digest") == 1
    assert value(families, "chronod_start_lateness_seconds_count") == 2


def test_chronod_worker_killed_after_publishing_still_runs_the_task_once(
    project: Project,
) -> None:
    """The chronod worker publishes, is SIGKILLed before it records the run, the run is reaped and
    published again (same task id): the Celery worker receives it twice and runs it once."""
    at = soon()
    # The chronod worker publishes with the project's own app (which freezes it after publishing);
    # a lapsed attempt is reaped within a second.
    project.write_config(
        one_slot_job("digest", "reports.tasks.send_digest", at, "args = [3]\nretries = 1"),
        celery='app = "tests.celery_app:app"',
        daemon='attempt_lease = "1s"',
    )
    marker = project.directory / "frozen.pid"
    env = {"CHRONOD_TEST_BROKER": project.broker, "CHRONOD_TEST_FREEZE": str(marker)}
    daemon = project.procs.run(project.config, project.store, workers=1, env=env)

    def frozen() -> str | None:
        return marker.read_text() if marker.exists() else None  # "" until the pid is written

    pid = int(wait_until(frozen, timeout=STARTUP, what="the publish"))
    os.kill(pid, signal.SIGKILL)  # stopped right after publishing: nothing recorded
    republished = wait_until(
        lambda: [r for r in project.history("digest") if r["outcome"] == "sent"],
        timeout=SETTLE,
        what="the reaped run published again",
    )
    assert [r["attempt"] for r in republished] == [2]
    worker = project.celery_worker(hook=True)
    wait_until(
        lambda: [r for r in project.history("digest") if r["outcome"] == "succeeded"],
        timeout=SETTLE,
        what="the task's outcome",
    )
    worker.wait_for_log("was executed before: skipped", timeout=SETTLE)
    daemon.term()
    assert len(worker.find(r"Task reports\.tasks\.send_digest\[digest@.*\] received")) == 2
    assert [line["headers"]["chronod_attempt"] for line in project.executions()] in ([1], [2])


def test_a_celery_retry_is_recorded_and_runs_once(project: Project) -> None:
    at = soon()
    project.write_config(one_slot_job("flaky", "reports.tasks.flaky", at))
    url, env = hook_metrics(project.directory)
    project.celery_worker(hook=True, env=env)
    daemon = project.procs.run(project.config, project.store, workers=1)
    wait_until(
        lambda: [r for r in project.history("flaky") if r["outcome"] == "succeeded"],
        timeout=STARTUP,
        what="the retried task's success",
    )
    daemon.term()
    outcomes = [(r["outcome"], r["error"]) for r in project.history("flaky")]
    assert outcomes[0] == ("succeeded", None)
    assert outcomes[1][0] == "retried"
    assert outcomes[1][1] == "Retry: Retry in 0s: ConnectionError('the mail server hung up')"
    assert outcomes[2][0] == "sent"
    assert [line["retries"] for line in project.executions()] == [0, 1]
    families = scrape(url)  # -P solo: the worker's own process executed both tries
    assert value(families, "chronod_run_retries_total", job="flaky") == 1
    assert value(families, "chronod_runs_total", job="flaky", outcome="succeeded") == 1
    assert value(families, "chronod_run_duration_seconds_count", job="flaky") == 2


def test_a_message_that_waited_past_grace_is_not_run(project: Project) -> None:
    at = soon(3)
    project.write_config(
        one_slot_job("digest", "reports.tasks.send_digest", at, "args = [1]").replace(
            'grace = "1m"', 'grace = "2s"'
        )
    )
    daemon = project.procs.run(project.config, project.store, workers=1)
    wait_until(lambda: project.history("digest"), timeout=STARTUP, what="the run sent")
    # No Celery worker until the message has expired (slot + grace): the point of the test.
    wait_until(
        lambda: datetime.now(UTC) > at + timedelta(seconds=2.5), timeout=SETTLE, what="expiry"
    )
    worker = project.celery_worker(hook=True)
    worker.wait_for_log(
        r"Discarding revoked task: reports\.tasks\.send_digest\[digest@", timeout=SETTLE
    )
    daemon.term()
    assert project.executions() == []
    assert [r["outcome"] for r in project.history("digest")] == ["sent"]


def test_two_daemons_and_a_leader_sigkill_still_run_each_slot_once(project: Project) -> None:
    project.write_config(EVERY_SECOND)
    project.celery_worker(hook=True)
    first = project.procs.run(project.config, project.store, workers=1, name="run-a")
    first.wait_for_log("became leader", timeout=STARTUP)
    second = project.procs.run(project.config, project.store, workers=1, name="run-b")
    second.wait_for_log("worker started", timeout=STARTUP)
    wait_until(lambda: len(project.executions()) >= 3, timeout=STARTUP, what="three executions")
    first.kill()
    second.wait_for_log("became leader", timeout=SETTLE)
    before = len(project.executions())
    wait_until(lambda: len(project.executions()) >= before + 3, timeout=SETTLE, what="three more")
    second.term()
    ids = Counter(line["id"] for line in project.executions())
    assert all(n == 1 for n in ids.values()), ids
