"""Operations end to end, through real ``chronod run`` / ``chronod worker`` processes (issue 5).

* the metrics endpoint of a running daemon, scraped over HTTP and parsed with the reference
  Prometheus parser (``prometheus_client``, a test-only dependency);
* ``sd_notify`` through a real datagram socket in ``NOTIFY_SOCKET``: READY, STATUS, WATCHDOG,
  RELOADING → READY on SIGHUP, STOPPING on SIGTERM, for ``run`` and for ``worker``;
* a Redis restart (SIGKILL, then the same port with its AOF) in the middle of a run of 1-second
  jobs: the daemon stays up, reports the outage (log, STATUS, ``chronod_store_up``), resumes
  dispatching within seconds of Redis being back, and nothing runs twice;
* which store, and who is there (issues 10 and 21): a daemon given a state directory by its service
  manager refuses a config that names no store, and ``chronod status`` in another process lists
  the leader and its standby and marks a worker and schedulers that stopped cleanly as stopped.

Every wait is a polled deadline (:func:`tests.procs.wait_until`); "nothing happens" windows use
:func:`tests.procs.hold_for`.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from chronod.config import load_config
from chronod.store import StoreSettings, open_store
from chronod.store.base import Outcome, Store
from chronod.tz import UTC
from tests.procs import (
    CHRONOD,
    REPO,
    ChronodProcess,
    Processes,
    hold_for,
    wait_until,
    write_atomically,
)
from tests.redis_server import RedisServer, free_port
from tests.targets import Target

pytestmark = pytest.mark.process

STARTUP = 30.0  # generous: a loaded CI machine can take seconds to import and connect
WATCHDOG_USEC = 1_000_000  # WatchdogSec=1s: pings every 0.5 s


# -- helpers --------------------------------------------------------------------------------------


def write_config(directory: Path, jobs: dict[str, str], header: str = "") -> Path:
    """``jobs``: name → command, each every second, ``overlap = "allow"``."""
    lines = [header, "[defaults]", 'timezone = "UTC"', 'overlap = "allow"']
    for name, command in jobs.items():
        lines += ["", f"[jobs.{name}]", 'every = "1s"', f"command = {command!r}"]
    path = directory / "schedules.toml"
    write_atomically(path, "\n".join(lines) + "\n")
    return path


def recorder(marker: Path) -> str:
    """A job command that appends its run id to ``marker`` (its idempotency key: a duplicate
    execution shows up as a repeated line)."""
    return f'echo "$CHRONOD_RUN_ID" >> {marker}'


class NotifySocket:
    """systemd's side of ``sd_notify``: a bound datagram socket read continuously (as systemd
    does: an unread socket's queue fills after a few messages) from a thread."""

    def __init__(self, path: Path) -> None:
        assert len(str(path)) < 100, f"AF_UNIX path too long: {path}"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self._messages: list[list[str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self._messages.append(data.decode().split("\n"))

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    @property
    def messages(self) -> list[list[str]]:
        with self._lock:
            return list(self._messages)

    def wait_for(
        self,
        predicate: Callable[[list[str]], bool],
        what: str,
        *,
        after: int = -1,
        timeout: float = STARTUP,
    ) -> int:
        """Index of the first message after ``after`` matching ``predicate``."""

        def look() -> int | None:
            for index, message in enumerate(self.messages):
                if index > after and predicate(message):
                    return index + 1  # truthy even for the first message
            return None

        found = wait_until(
            look, timeout=timeout, what=what, context=lambda: repr(self.messages[-20:])
        )
        return found - 1

    def statuses(self) -> list[str]:
        return [line[7:] for m in self.messages for line in m if line.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listening = NotifySocket(tmp_path / "notify.sock")
    yield listening
    listening.close()


def has(line: str) -> Callable[[list[str]], bool]:
    return lambda message: line in message


def metrics_url(process: ChronodProcess) -> str:
    entry = process.wait_for_log(r"^serving metrics$", timeout=STARTUP)
    return f"http://{entry.fields['address']}/metrics"


def scrape(url: str) -> dict[str, Metric]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float | None:
    """The value of sample ``sample`` (its full name: ``…_total``, ``…_count``) with ``labels``."""
    for family in families.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state' / 'chronod.db'}"


def run_ids(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def ended(process: ChronodProcess, timeout: float = STARTUP) -> int:
    process.term()
    return process.wait_exit(timeout=timeout)


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_endpoint_of_a_running_daemon(tmp_path: Path, procs: Processes) -> None:
    marker = tmp_path / "ran"
    config = write_config(tmp_path, {"ok": recorder(marker), "bad": "exit 3"})
    daemon = procs.run(config, sqlite_url(tmp_path), workers=2, extra=["--metrics", "127.0.0.1:0"])
    url = metrics_url(daemon)

    def complete() -> dict[str, Metric] | None:
        families = scrape(url)
        ready = (
            (value(families, "chronod_runs_total", job="ok", outcome="succeeded") or 0) >= 2
            and (value(families, "chronod_runs_total", job="bad", outcome="failed") or 0) >= 1
            # job states are sampled every few seconds: wait for one sample after a success
            and value(families, "chronod_job_last_success_timestamp_seconds", job="ok")
        )
        return families if ready else None

    families = wait_until(complete, timeout=STARTUP, what="runs and a sampled last success")
    now = time.time()
    assert value(families, "chronod_leader") == 1
    assert (value(families, "chronod_leader_epoch") or 0) >= 1
    assert value(families, "chronod_store_up") == 1
    for histogram in ("chronod_dispatch_lateness_seconds", "chronod_start_lateness_seconds"):
        count = value(families, f"{histogram}_count") or 0
        assert count >= 3, f"{histogram}: {count} observations"
        inf = value(families, f"{histogram}_bucket", le="+Inf")
        assert inf == count
        # A healthy daemon dispatches within a second of the slot.
        assert (value(families, f"{histogram}_bucket", le="1") or 0) >= count * 0.8
    assert (value(families, "chronod_run_duration_seconds_count", job="ok") or 0) >= 2
    last_ok = value(families, "chronod_job_last_success_timestamp_seconds", job="ok")
    assert last_ok is not None
    assert now - 30 < last_ok <= now + 1
    assert value(families, "chronod_job_last_success_timestamp_seconds", job="bad") is None
    assert value(families, "chronod_job_interval_seconds", job="ok") == 1
    assert value(families, "chronod_job_paused", job="ok") == 0
    assert value(families, "chronod_queue_depth", queue="default") is not None
    assert value(families, "chronod_lease_renew_failures_total") == 0
    assert families["chronod_runs"].type == "counter"
    assert families["chronod_start_lateness_seconds"].type == "histogram"
    assert ended(daemon) == 0


# -- sd_notify ------------------------------------------------------------------------------------


def test_sd_notify_of_chronod_run(tmp_path: Path, procs: Processes, notify: NotifySocket) -> None:
    config = write_config(tmp_path, {"tick": "true"})
    daemon = procs.run(config, sqlite_url(tmp_path), workers=1, env=notify.env())
    ready = notify.wait_for(has("READY=1"), "READY=1")
    assert f"MAINPID={daemon.pid}" in notify.messages[ready]
    # The queue depth joins the STATUS line once the sampler thread has read the store; until then
    # the line says "queue depth not sampled yet". On a loaded machine that first sample can come
    # after any number of watchdog pings, so wait for it rather than for a count of pings.
    sampled = notify.wait_for(
        lambda m: any(line.startswith("STATUS=leader, epoch ") and "queued" in line for line in m),
        "a leader STATUS with the sampled queue depth",
    )
    [status] = [line[7:] for line in notify.messages[sampled] if line.startswith("STATUS=")]
    assert "; 1 job; " in status
    pings = notify.wait_for(has("WATCHDOG=1"), "a watchdog ping", after=ready)
    notify.wait_for(has("WATCHDOG=1"), "a second watchdog ping", after=pings)

    daemon.hup()
    reloading = notify.wait_for(has("RELOADING=1"), "RELOADING=1 after SIGHUP")
    assert any(line.startswith("MONOTONIC_USEC=") for line in notify.messages[reloading])
    notify.wait_for(has("READY=1"), "READY=1 after the reload", after=reloading)
    daemon.wait_for_log(r"^config reloaded$", timeout=STARTUP)

    daemon.term()
    notify.wait_for(has("STOPPING=1"), "STOPPING=1 after SIGTERM")
    assert daemon.wait_exit(timeout=STARTUP) == 0


def test_sd_notify_and_metrics_of_chronod_worker(
    tmp_path: Path, procs: Processes, notify: NotifySocket
) -> None:
    marker = tmp_path / "ran"
    config = write_config(tmp_path, {"job": recorder(marker)})
    url = sqlite_url(tmp_path)
    worker = procs.worker(
        config, url, concurrency=1, extra=["--metrics", "127.0.0.1:0"], env=notify.env()
    )
    ready = notify.wait_for(has("READY=1"), "READY=1")
    assert any("1 worker on default" in line for line in notify.messages[ready])
    pings = notify.wait_for(has("WATCHDOG=1"), "a watchdog ping", after=ready)
    notify.wait_for(has("WATCHDOG=1"), "a second watchdog ping", after=pings)

    # A manual run (no scheduler here): executed by the child, counted by the supervisor.
    store = open_store(StoreSettings(url=url, config_dir=tmp_path))
    try:
        job = load_config(config).jobs["job"]
        run = store.enqueue_manual(job.name, job.queue, job.digest, job.overlap, job.max_attempts)
    finally:
        store.close()
    endpoint = metrics_url(worker)
    wait_until(
        lambda: value(scrape(endpoint), "chronod_runs_total", job="job", outcome="succeeded"),
        timeout=STARTUP,
        what="the worker's run in its metrics",
    )
    assert run_ids(marker) == [run.run_id]

    worker.hup()
    reloading = notify.wait_for(has("RELOADING=1"), "RELOADING=1 after SIGHUP")
    notify.wait_for(has("READY=1"), "READY=1 after the reload", after=reloading)

    worker.term()
    notify.wait_for(has("STOPPING=1"), "STOPPING=1 after SIGTERM")
    assert worker.wait_exit(timeout=STARTUP) == 0


# -- store outage ---------------------------------------------------------------------------------


def slots_since(store: Store, jobs: list[str], since: datetime) -> list[str]:
    """Run ids of the runs (finished or live) whose slot is at or after ``since``."""
    runs = [r for job in jobs for r in store.history(job, 1000)] + store.live_runs()
    return [r.run_id for r in runs if r.slot >= since]


@pytest.mark.redis
def test_redis_restart_in_the_middle_of_one_second_jobs(
    tmp_path: Path, procs: Processes, notify: NotifySocket
) -> None:
    server = RedisServer(tmp_path / "redis", persist=True)
    server.start()
    try:
        _redis_restart(tmp_path, procs, notify, server)
    finally:
        server.stop()


def _redis_restart(
    tmp_path: Path, procs: Processes, notify: NotifySocket, server: RedisServer
) -> None:
    marker = tmp_path / "ran"
    jobs = ["a", "b", "c"]
    config = write_config(tmp_path, {name: recorder(marker) for name in jobs})
    daemon = procs.run(
        config, server.url, workers=2, extra=["--metrics", "127.0.0.1:0"], env=notify.env()
    )
    endpoint = metrics_url(daemon)
    wait_until(lambda: len(run_ids(marker)) >= 6, timeout=STARTUP, what="jobs running")

    server.kill()
    killed = datetime.now(UTC)
    daemon.wait_for_log(r"^store unreachable", timeout=10)
    wait_until(
        lambda: value(scrape(endpoint), "chronod_store_up") == 0, timeout=10, what="store_up 0"
    )
    wait_until(
        lambda: any(s.startswith("store unavailable since") for s in notify.statuses()),
        timeout=10,
        what="the outage in STATUS",
    )
    # A few seconds down, whatever the daemon tries meanwhile: it must stay up.
    hold_for(daemon.alive, seconds=3, what="the daemon alive while Redis is down")

    server.start()  # same port, same directory: the AOF brings every acknowledged write back
    back = datetime.now(UTC)
    store = open_store(StoreSettings(url=server.url, config_dir=tmp_path))
    try:
        # The first slot due after Redis is back is dispatched within seconds (the sampler's
        # probe notices the store and wakes the loop; the slots of the outage are caught up).
        began = time.monotonic()
        wait_until(
            lambda: slots_since(store, jobs, back + timedelta(seconds=1)),
            timeout=8,
            what="dispatching to resume",
            context=daemon.tail,
        )
        resumed = time.monotonic() - began
        assert daemon.alive()
        daemon.wait_for_log(r"^store reachable again$", timeout=10)
        wait_until(
            lambda: value(scrape(endpoint), "chronod_store_up") == 1, timeout=10, what="store_up 1"
        )
        # The workers, backing off while the store was away, catch up and run them too.
        wait_until(
            lambda: any(_slot_of(r) >= back + timedelta(seconds=2) for r in run_ids(marker)),
            timeout=15,
            what="runs after the outage executed",
        )
        assert ended(daemon) == 0
        history = [r for job in jobs for r in store.history(job, 1000)]
    finally:
        store.close()

    executed = run_ids(marker)
    twice = [run_id for run_id, n in Counter(executed).items() if n > 1]
    assert not twice, f"executed more than once: {twice}"
    accepted = Counter(r.run_id for r in history)
    assert not [run_id for run_id, n in accepted.items() if n > 1], "a result recorded twice"
    assert all(r.state is Outcome.SUCCEEDED for r in history), [r.state for r in history]
    # The outage's slots were caught up (within grace), not lost.
    outage = {
        r.run_id
        for r in history
        if killed + timedelta(seconds=1) <= r.slot <= back - timedelta(seconds=1)
    }
    assert len(outage) >= len(jobs), f"outage slots run: {sorted(outage)}"
    print(f"dispatching resumed {resumed:.2f} s after Redis was back")


def _slot_of(run_id: str) -> datetime:
    return datetime.fromisoformat(run_id.split("@", 1)[1].replace("Z", "+00:00"))


# -- which store, and who is there ---------------------------------------------------------------


def test_service_with_a_state_directory_refuses_a_config_without_a_store(
    tmp_path: Path, procs: Processes
) -> None:
    """The old trap: under systemd (STATE_DIRECTORY set) the daemon kept its SQLite store in the
    state directory while shells opened one beside the config. Now a config that names no store
    is refused there, in one line naming the line to add; nothing is created anywhere."""
    config = write_config(tmp_path, {"tick": "true"})
    state = tmp_path / "state"
    state.mkdir()
    for command in (["run", "--workers", "0"], ["worker"]):
        daemon = procs.spawn(
            command[0],
            ["--config", str(config), *command],
            env={"STATE_DIRECTORY": str(state)},
        )
        assert daemon.wait_exit(timeout=STARTUP) == 2
        assert daemon.log_path.read_text() == (
            f"chronod: error: the config in {tmp_path} names no store, and a service's state "
            "must not depend on its environment: set [chronod] store = "
            f'"sqlite://{state}/chronod.db" there (or a Redis URL), so that commands typed in '
            "a shell open the same store\n"
        )
    assert list(state.iterdir()) == []
    assert not (tmp_path / ".chronod").exists()


def shell_status(config: Path, url: str) -> dict[str, Any]:
    """``chronod status --json`` from a separate process, as an operator would run it."""
    done = subprocess.run(
        [*CHRONOD, "--config", str(config), "--store", url, "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_status_lists_standbys_and_marks_stopped_processes(
    tmp_path: Path, procs: Processes, target: Target
) -> None:
    config = write_config(tmp_path, {"tick": "true"}, header='[chronod]\nlease = "3s"\n')
    leader = procs.run(config, target.url, name="leader")
    leader.wait_for_log(r"^became leader", timeout=STARTUP)
    standby = procs.run(config, target.url, name="standby")
    worker = procs.worker(config, target.url, concurrency=1)
    worker.wait_for_log(r"^worker started$", timeout=STARTUP)

    def roles() -> dict[str, str]:
        return {s["node"]: s["role"] for s in shell_status(config, target.url)["schedulers"]}

    wait_until(
        lambda: roles() == {leader.node: "leader", standby.node: "standby"},
        timeout=STARTUP,
        what="the leader and the standby in status",
        context=procs.logs,
    )
    workers = shell_status(config, target.url)["workers"]
    assert [(w["stopped"], w["running"]) for w in workers] == [(False, 0)]
    child = workers[0]["worker"]

    assert ended(worker) == 0
    (gone,) = shell_status(config, target.url)["workers"]  # listed until its entry expires...
    assert (gone["worker"], gone["stopped"]) == (child, True)  # ...marked stopped at once
    assert ended(standby) == 0
    assert roles() == {leader.node: "leader", standby.node: "stopped"}
    assert ended(leader) == 0
    assert roles() == {leader.node: "stopped", standby.node: "stopped"}


# -- chronod web ----------------------------------------------------------------------------------


def test_web_stops_on_signals_back_to_back(tmp_path: Path, procs: Processes) -> None:
    """A burst of SIGINTs then a SIGTERM: ``chronod web`` stops at once and exits 0. Its stop
    flag was a threading.Event set from the handler, which can run inside Event.wait() holding
    the Event's lock: the set() then waited for that lock forever."""
    config = write_config(tmp_path, {"tick": "true"})
    args = ["--config", str(config), "--store", sqlite_url(tmp_path), "--log-format", "json"]
    web = procs.spawn("web", [*args, "web", "--bind", f"127.0.0.1:{free_port()}"])
    web.wait_for_log(r"^web page serving$", timeout=STARTUP)
    for _ in range(200):
        web.send(signal.SIGINT)
    web.term()
    assert web.wait_exit(timeout=STARTUP) == 0
    assert web.find(r"^web page stopped$")
