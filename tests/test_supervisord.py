"""The shipped supervisord conf under a real supervisord, steered from a shell that lacks its
environment (issue 21).

The conf (``systemd/supervisor-chronod.conf``) is included by a minimal main supervisord.conf, as
Debian's includes ``conf.d/*.conf``; only install paths are rewritten (the binary, the config,
``/var/lib/chronod``, ``/var/log/chronod``) and the user, to the one running the test. The config
is the README's: it names the store. Then, with short leases and drain times so the whole test
stays well under a minute:

* the job runs;
* a shell with nothing of supervisord's environment and another working directory sees the
  leader in ``chronod status``, ``pause`` stops the job and ``resume`` restarts it;
* ``supervisorctl signal HUP chronod`` reloads an edited file (a new job runs);
* ``supervisorctl stop chronod`` drains a running job and stops within ``stopwaitsecs``, with exit
  status 0 (not killed);
* the extra worker program consumes its queue (a run triggered from the shell, once the scheduler
  and its pool are stopped, is run by it).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import ChronodProcess, Processes, hold_for, wait_until, write_atomically

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "systemd" / "supervisor-chronod.conf"
BIN = Path(sys.executable).parent
STARTUP = 30.0  # seconds: generous for a loaded 2-core machine

# The paths the shipped conf names and the README installs to, rewritten under the test directory.
INSTALL_PATHS = ("/etc/chronod", "/var/lib/chronod", "/var/log/chronod")
INSTALLED_CHRONOD = "/opt/chronod/bin/chronod"

MAIN_CONF = """\
[unix_http_server]
file={root}/run/supervisor.sock

[supervisord]
logfile={root}/var/log/supervisord.log
pidfile={root}/run/supervisord.pid
childlogdir={root}/var/log
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{root}/run/supervisor.sock

[include]
files = {root}/etc/supervisor/conf.d/*.conf
"""

SCHEDULES = """\
[chronod]
store = "sqlite://{root}/var/lib/chronod/chronod.db"
workers = 1
lease = "3s"
drain_timeout = "5s"

[defaults]
timezone = "UTC"
cwd = "{root}"

[jobs.tick]
every = "1s"
command = 'echo "$CHRONOD_RUN_ID" >> tick'

[jobs.slow]
every = "1s"
command = 'echo start "$CHRONOD_RUN_ID" >> slow; sleep 2; echo end "$CHRONOD_RUN_ID" >> slow'

[jobs.report]
every = "1d"
queue = "reports"
command = 'echo "$CHRONOD_RUN_ID" >> reports'
"""

ADDED = """
[jobs.added]
every = "1s"
command = 'echo "$CHRONOD_RUN_ID" >> added'
"""


@dataclass
class Installed:
    root: Path
    processes: Processes
    supervisord: ChronodProcess

    @property
    def config(self) -> Path:
        return self.root / "etc" / "chronod" / "schedules.toml"

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.root / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.stdout + done.stderr

    def pid(self, program: str) -> int:
        text = self.ctl("pid", program).strip()
        return int(text) if text.isdigit() else 0

    def shell(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``chronod --config CONFIG ARGS`` from an operator's shell: none of supervisord's
        environment (only PATH and HOME), another working directory."""
        return subprocess.run(
            [str(BIN / "chronod"), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.root / "home")},
        )

    def lines(self, name: str) -> list[str]:
        path = self.root / name
        return path.read_text().splitlines() if path.exists() else []

    def log(self, name: str) -> str:
        path = self.root / "var" / "log" / "chronod" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def context(self) -> str:
        logs = [f"--- {name}:\n{self.log(name)[-4000:]}" for name in ("chronod.log",)]
        logs.append(f"--- worker-reports.log:\n{self.log('worker-reports.log')[-2000:]}")
        supervisor = (self.root / "var" / "log" / "supervisord.log").read_text(errors="replace")
        return "\n".join([*logs, f"--- supervisord.log:\n{supervisor[-3000:]}"])


def install(root: Path) -> None:
    """What the README's supervisord steps do, under ``root``: directories, the config naming
    the store, the shipped conf with install paths (and the user) rewritten."""
    for directory in ("etc/chronod", "etc/supervisor/conf.d", "var/lib/chronod", "var/log/chronod"):
        (root / directory).mkdir(parents=True)
    (root / "run").mkdir()
    (root / "home").mkdir()
    (root / "etc" / "chronod" / "schedules.toml").write_text(SCHEDULES.format(root=root))
    conf = CONF.read_text().replace(INSTALLED_CHRONOD, str(BIN / "chronod"))
    for path in INSTALL_PATHS:
        conf = conf.replace(path, f"{root}{path}")
    conf = conf.replace("user=chronod", f"user={getpass.getuser()}")
    (root / "etc" / "supervisor" / "conf.d" / "chronod.conf").write_text(conf)
    (root / "supervisord.conf").write_text(MAIN_CONF.format(root=root))


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Installed]:
    root = tmp_path / "host"
    assert len(f"{root}/run/supervisor.sock") < 100, "AF_UNIX path too long"
    install(root)
    with Processes(tmp_path / "procs") as processes:
        supervisord = processes.command(
            "supervisord",
            [str(BIN / "supervisord"), "-c", str(root / "supervisord.conf"), "-n"],
            cwd=tmp_path,
        )
        site = Installed(root, processes, supervisord)
        try:
            yield site
        finally:
            site.ctl("shutdown")
            wait_until(lambda: not supervisord.alive(), timeout=STARTUP, what="supervisord to exit")


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh")
def test_shipped_conf_under_a_real_supervisord(installed: Installed) -> None:
    site = installed
    began = time.monotonic()

    # The job runs.
    wait_until(
        lambda: len(site.lines("tick")) >= 2,
        timeout=STARTUP,
        what="tick to run under supervisord",
        context=site.context,
    )

    # A shell without supervisord's environment sees the leader: the pid supervisord started.
    daemon_pid = site.pid("chronod")
    status = site.shell("status")
    assert status.returncode == 0, status.stderr
    leader = re.search(r"^leader\s+(\S+):(\d+), epoch \d+", status.stdout, re.M)
    assert leader is not None, status.stdout
    assert int(leader.group(2)) == daemon_pid
    assert "warning" not in status.stdout
    data = json.loads(site.shell("status", "--json").stdout)
    assert data["schedulers"][0]["role"] == "leader"

    # pause stops the job; resume restarts it.
    paused = site.shell("pause", "--job", "tick")
    assert (paused.returncode, paused.stderr) == (0, ""), paused
    # A run dispatched just before the pause may still be queued or running: once none is left
    # (its line is written before its end is recorded), nothing may add a line.
    wait_until(
        lambda: _active(site, "tick") == 0,
        timeout=STARTUP,
        what="tick's last run before the pause to end",
        context=site.context,
    )
    count = len(site.lines("tick"))
    hold_for(
        lambda: len(site.lines("tick")) == count,
        seconds=3,
        what="tick paused",
        context=site.context,
    )
    resumed = site.shell("resume", "--job", "tick")
    assert resumed.returncode == 0, resumed
    wait_until(
        lambda: len(site.lines("tick")) > count + 1,
        timeout=STARTUP,
        what="tick to run again after resume",
        context=site.context,
    )

    # `supervisorctl signal HUP chronod` reloads an edited file.
    write_atomically(site.config, site.config.read_text() + ADDED)
    assert "chronod: signalled" in site.ctl("signal", "HUP", "chronod")
    wait_until(
        lambda: site.lines("added"),
        timeout=STARTUP,
        what="the job added by the reload to run",
        context=site.context,
    )
    assert "config reloaded" in site.log("chronod.log")

    # `supervisorctl stop chronod` drains a running job and stops within stopwaitsecs.
    wait_until(
        lambda: _running_slow(site),
        timeout=STARTUP,
        what="a slow run in progress",
        context=site.context,
    )
    stopping = time.monotonic()
    answer = site.ctl("stop", "chronod")
    took = time.monotonic() - stopping
    assert "chronod: stopped" in answer, answer + site.context()
    assert took < 60, took  # stopwaitsecs in the shipped conf
    supervisor_log = (site.root / "var" / "log" / "supervisord.log").read_text()
    assert "stopped: chronod (exit status 0)" in supervisor_log, site.context()
    assert _running_slow(site) == [], "a slow run was cut off instead of drained"

    # The extra worker program consumes its queue: with the scheduler and its pool stopped, a
    # run triggered from the shell can only be run by it.
    worker_pid = site.pid("chronod-worker-reports")
    triggered = site.shell("trigger", "--job", "report", "--json")
    assert triggered.returncode == 0, triggered
    run_id = json.loads(triggered.stdout)["run_id"]
    ran = wait_until(
        lambda: [line for line in site.lines("reports") if line.startswith(run_id)],
        timeout=STARTUP,
        what="the reports worker to run the triggered run",
        context=site.context,
    )
    history = json.loads(site.shell("history", "--job", "report", "--json").stdout)
    (run,) = [r for r in history["runs"] if r["run_id"] == run_id]
    worker_child = int(run["worker"].rpartition(":")[2])
    assert _parent(worker_child) == worker_pid, (run, ran)

    answer = site.ctl("stop", "chronod-worker-reports")
    assert "chronod-worker-reports: stopped" in answer, answer
    status = site.shell("status")
    assert re.search(r"^leader\s+none", status.stdout, re.M), status.stdout
    assert re.search(rf":{daemon_pid}\s+stopped", status.stdout), status.stdout
    print(f"supervisord test body took {time.monotonic() - began:.1f} s; stop took {took:.1f} s")


def _active(site: Installed, job: str) -> int | None:
    done = site.shell("status", "--json")
    if done.returncode != 0:
        return None
    (state,) = [j for j in json.loads(done.stdout)["jobs"] if j["job"] == job]
    return int(state["active"])


def _running_slow(site: Installed) -> list[str]:
    """Run ids of slow runs that started and have not ended."""
    started: set[str] = set()
    ended: set[str] = set()
    for line in site.lines("slow"):
        kind, _, run_id = line.partition(" ")
        (started if kind == "start" else ended).add(run_id)
    return sorted(started - ended)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text() if os.path.exists(f"/proc/{pid}/stat") else ""
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else 0
