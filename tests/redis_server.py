"""Private Redis deployments for tests: free ports, own directories, killable and restartable.

:class:`RedisServer` is one redis-server (optionally a replica of another, or a Redis Cluster
node); :class:`SentinelSet` is Sentinel (a primary, replicas and three sentinels, failing over in
about two seconds); :class:`Cluster` is a Redis Cluster of three primaries with a replica each.
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
from collections.abc import Callable, Sequence
from functools import partial
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

    def __init__(
        self,
        directory: Path,
        *,
        persist: bool = False,
        port: int | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.port = port or free_port()
        self.extra = list(extra)  # more redis-server arguments (replicaof, cluster-enabled, ...)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> Any:
        """A plain client (``Any``: redis-py's annotations differ between the releases we admit)."""
        client: Any = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        return client

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the server stops answering and replicating, as a stalled host would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

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
                *self.extra,
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
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


SERVICE = "mymaster"


class SentinelSet:
    """A primary, ``replicas`` replicas and three sentinels (quorum 2) that fail over soon after
    the primary stops answering for ``down_after_ms``.

    The tests' 2000 ms: with 1000 on a busy 2-core machine the sentinels now and then declared a
    just-promoted primary down within a second and failed back to the restarted old one."""

    def __init__(self, directory: Path, *, replicas: int = 1, down_after_ms: int = 2000) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.primary = RedisServer(directory / "primary")
        self.replicas = [
            RedisServer(
                directory / f"replica{i}",
                extra=["--replicaof", "127.0.0.1", str(self.primary.port)],
            )
            for i in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def url(self, password: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        auth = f":{password}@" if password else ""
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}/0"

    def start(self) -> None:
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        for i, port in enumerate(self.sentinel_ports):
            folder = self.directory / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"logfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [self.primary.binary, str(config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for replica in self.replicas:
            _wait(partial(self.in_sync, replica), 15, f"replica {replica.port} in sync")
        for port in self.sentinel_ports:
            _wait(partial(self._sees_all, port), 15, f"sentinel {port} ready")

    def _sentinel(self, port: int) -> Any:
        client: Any = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        return client

    def _sees_all(self, port: int) -> bool:
        client = self._sentinel(port)
        try:
            master = client.sentinel_master(SERVICE)
            return bool(
                int(master["num-slaves"]) >= len(self.replicas)
                and int(master["num-other-sentinels"]) >= len(self.sentinel_ports) - 1
            )
        finally:
            client.close()

    def in_sync(self, replica: RedisServer) -> bool:
        """``replica``'s replication offset has caught up with the primary's."""
        info = self.primary.client().info("replication")
        theirs = replica.client().info("replication")
        return bool(
            theirs.get("master_link_status") == "up"
            and int(theirs["slave_repl_offset"]) >= int(info["master_repl_offset"])
        )

    def cut(self, replica: RedisServer, primary: RedisServer) -> None:
        """Make ``replica`` fall behind: stop it, and drop its link on ``primary`` (with the link
        up, what the primary buffered for it would still arrive once it runs again)."""
        replica.pause()
        primary.client().client_kill_filter(_type="replica")

    def master_port(self) -> int | None:
        """The port the sentinels name as primary (the first that answers)."""
        for port in self.sentinel_ports:
            client = self._sentinel(port)
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
                if address:
                    return int(address[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def wait_failover(self, away_from: int, timeout: float = 30.0) -> RedisServer:
        """Wait until the sentinels name another primary than port ``away_from``, and it has
        taken the role; returns it."""
        by_port = {server.port: server for server in self.servers}

        def promoted() -> bool:
            port = self.master_port()
            if port is None or port == away_from or port not in by_port:
                return False
            return bool(by_port[port].client().info("replication")["role"] == "master")

        _wait(promoted, timeout, f"a failover away from {away_from}")
        port = self.master_port()
        assert port is not None
        return by_port[port]

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        for server in self.servers:
            server.stop()


class Cluster:
    """A Redis Cluster: ``primaries`` primaries with one replica each, node timeout 1 s."""

    def __init__(self, directory: Path, *, primaries: int = 3) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / f"node{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                    # The bus port defaults to port + 10000, which a free port may not allow.
                    "--cluster-port",
                    str(free_port()),
                ],
            )
            for i in range(2 * primaries)
        ]
        self.primaries = primaries

    def url(self, *nodes: RedisServer, password: str = "") -> str:
        auth = f":{password}@" if password else ""
        return "redis+cluster://" + auth + ",".join(n.address for n in nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            pytest.skip("redis-cli is not on PATH: cannot create a Redis Cluster")
        subprocess.run(
            [
                redis_cli,
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        _wait(self.healthy, 30, "cluster_state:ok on every node")

    def healthy(self) -> bool:
        for node in self.nodes:
            if node.alive():
                info = node.client().execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return True

    def owner(self, slot: int) -> RedisServer:
        """The primary serving ``slot`` (as the first live node sees it)."""
        for node in self.nodes:
            if not node.alive():
                continue
            for start, end, primary, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def node_id(self, node: RedisServer) -> str:
        reply = node.client().execute_command("CLUSTER", "MYID")
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def primaries_now(self) -> list[RedisServer]:
        found = []
        for node in self.nodes:
            if node.alive() and node.client().info("replication")["role"] == "master":
                found.append(node)
        return found

    def migrate(
        self, slot: int, target: RedisServer, *, batch: int = 5, pause: float = 0.05
    ) -> int:
        """Move ``slot`` to ``target`` the way ``redis-cli --cluster reshard`` does, a few keys at
        a time with a pause between batches (so clients meet the slot mid-migration); returns
        the number of keys moved."""
        source = self.owner(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while True:
            keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.client().execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
            moved += len(keys)
            time.sleep(pause)
        for node in self.nodes:
            if node.alive() and node.client().info("replication")["role"] == "master":
                node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
