"""A private redis-server for tests: free port, own directory, killable and restartable.

Tests never touch a shared server. ``CHRONOD_REQUIRE_REDIS=1`` turns "redis-server is not installed"
from a loud skip into a failure (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_server() -> str:
    """Path of redis-server, or skip (locally) / fail (CHRONOD_REQUIRE_REDIS=1) loudly."""
    binary = shutil.which("redis-server")
    if binary:
        return binary
    reason = (
        "redis-server is not on PATH: Redis tests cannot run "
        "(install it with 'apt-get install redis-server')"
    )
    if os.environ.get("CHRONOD_REQUIRE_REDIS") == "1":
        pytest.fail(reason + " and CHRONOD_REQUIRE_REDIS=1", pytrace=False)
    pytest.skip(reason)


class RedisServer:
    """One redis-server process; ``persist`` keeps data across :meth:`kill` + :meth:`start`."""

    def __init__(self, directory: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        """A plain client (``Any``: redis-py's annotations differ between the releases we admit)."""
        client: Any = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        return client

    def start(self, timeout: float = 10.0) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persist
            else ["--appendonly", "no", "--save", ""]
        )
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, exactly like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
