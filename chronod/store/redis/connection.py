"""Where the Redis store's commands go: one server, the primary Sentinel names, or the Redis Cluster
node that owns the namespace's hash slot; and the clients that take them there.

:class:`~chronod.store.redis.RedisStore` sends every command as part of a pipeline (one round trip,
one connection), because ``WAIT`` counts the replicas that acknowledged *the writes of the
connection it runs on*: a script and the ``WAIT`` that vouches for it must share a connection. An
executor runs such a batch (a list of functions that each queue one command on a pipeline) and
returns the replies, errors included as exception objects (``raise_on_error=False``).

Redis Cluster: every key of a namespace shares one hash tag, so one node serves all of them and
:class:`ClusterExecutor` sends each batch to that node's own client (redis-py's ``RedisCluster``
finds the node and keeps the topology). It follows ``MOVED`` (the slot moved: refresh the
topology), ``ASK`` (the slot is being migrated: ask the target, prefixing ``ASKING``) and retries
``TRYAGAIN``/``CLUSTERDOWN`` and lost connections (a failover) a few times with a short backoff;
past that the error reaches the store, which reports the store as unavailable. Re-sending a batch
is safe: every script is idempotent (see each script's "Twice:" line).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel

from chronod.store import RedisTarget
from chronod.store.keys import KeySpace

Op = Callable[[Any], object]  # queues one command on a redis-py pipeline

SOCKET_TIMEOUT = 2.0  # seconds; below the lease renewal period, above BLOCK_SLICE (XREADGROUP)
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 30  # seconds idle before a connection is PINGed before use
RETRIES = 2  # per command, on connection errors and timeouts (every script is idempotent)
CLUSTER_ATTEMPTS = 8
CLUSTER_BACKOFF = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5)

# redis-py's annotations differ between the releases pyproject.toml admits (untyped helpers in
# some, sync/async unions in others), so chronod holds clients, pipelines and the classes it
# constructs them with as ``Any``: the type check then means the same with every release.
_RedisClass: Any = redis.Redis
_SentinelClass: Any = Sentinel
_RetryClass: Any = Retry


class Executor(Protocol):
    def run(self, ops: Sequence[Op]) -> list[Any]:
        """Run ``ops`` as one pipeline on the primary; replies in order, errors as objects."""

    def close(self) -> None: ...


class DirectExecutor:
    """A standalone server, or Sentinel's primary (its connection pool follows failovers)."""

    def __init__(self, client: Any, closers: Sequence[Any] = ()) -> None:
        self.client = client
        self._closers = list(closers)

    def run(self, ops: Sequence[Op]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for op in ops:
            op(pipe)
        return list(pipe.execute(raise_on_error=False))

    def close(self) -> None:
        self.client.close()
        for other in self._closers:
            other.close()


class ClusterExecutor:
    """The node of a Redis Cluster that owns ``slot_key``'s hash slot (see the module docs).

    The ``RedisCluster`` client is built on first use: it connects while it is constructed, and a
    store connects lazily (an unreachable store is reported by its first operation, not at start).
    """

    def __init__(self, target: RedisTarget, options: dict[str, Any], slot_key: str) -> None:
        self._target = target
        self._options = options
        self._slot_key = slot_key
        self._lock = threading.Lock()
        self._cluster: Any = None

    def _topology(self, refresh: bool = False) -> Any:
        from redis.cluster import ClusterNode, RedisCluster

        node_class: Any = ClusterNode
        with self._lock:
            if self._cluster is None:
                cluster_class: Any = RedisCluster
                self._cluster = cluster_class(
                    startup_nodes=[node_class(host, port) for host, port in self._target.hosts],
                    **self._options,
                )
            elif refresh:
                self._cluster.nodes_manager.initialize()
            return self._cluster

    def _node_client(self, refresh: bool, host_port: tuple[str, int] | None) -> Any:
        cluster = self._topology(refresh)
        if host_port is not None:
            node = cluster.get_node(host=host_port[0], port=host_port[1])
            if node is None:  # a node the cached topology does not know yet
                cluster.nodes_manager.initialize()
                node = cluster.get_node(host=host_port[0], port=host_port[1])
            if node is not None:
                return cluster.get_redis_connection(node)
        return cluster.get_redis_connection(cluster.get_node_from_key(self._slot_key))

    def run(self, ops: Sequence[Op]) -> list[Any]:
        refresh, ask = False, None
        for attempt in range(CLUSTER_ATTEMPTS):
            last = attempt == CLUSTER_ATTEMPTS - 1
            try:
                client = self._node_client(refresh, ask)
                pipe = client.pipeline(transaction=False)
                if ask is not None:
                    pipe.execute_command("ASKING")
                for op in ops:
                    op(pipe)
                results = list(pipe.execute(raise_on_error=False))
            except (
                redis.ConnectionError,
                redis.TimeoutError,
                ClusterDownError,
                RedisClusterException,  # (no RedisError: "no node reachable", topology errors)
            ) as exc:
                # The node died or is being failed over: look the owner up again.
                if last:
                    if isinstance(exc, RedisClusterException):
                        raise redis.ConnectionError(str(exc)) from exc
                    raise
                refresh, ask = True, None
                time.sleep(CLUSTER_BACKOFF[min(attempt, len(CLUSTER_BACKOFF) - 1)])
                continue
            if ask is not None:
                results = results[1:]
            redirect = next((r for r in results if _is_redirect(r)), None)
            if redirect is None or last:
                return results
            if isinstance(redirect, MovedError):
                refresh, ask = True, None
            elif isinstance(redirect, AskError):
                ask = (redirect.host, int(redirect.port))
                continue  # at once: the target answers (or says TRYAGAIN) without a wait
            else:  # TRYAGAIN (a migration in progress) or CLUSTERDOWN (a failover)
                refresh, ask = isinstance(redirect, ClusterDownError), None
            time.sleep(CLUSTER_BACKOFF[min(attempt, len(CLUSTER_BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()


def _is_redirect(result: object) -> bool:
    return isinstance(result, (MovedError, AskError, TryAgainError, ClusterDownError))


def executor_for(target: RedisTarget, namespace: str) -> Executor:
    """The executor for ``target`` (nothing connects before its first command)."""
    options = _connection_options()
    secret = {"username": target.username, "password": target.password}
    tls: dict[str, Any] = {}
    if target.tls:
        tls["ssl"] = True
        for name, value in target.tls_options:
            tls[name] = value == "true" if name == "ssl_check_hostname" else value
    if target.kind == "sentinel":
        # The URL's credentials are the data nodes'; sentinels have their own, if any.
        sentinel = _SentinelClass(
            list(target.hosts),
            sentinel_kwargs={
                "socket_timeout": CONNECT_TIMEOUT,
                "socket_connect_timeout": CONNECT_TIMEOUT,
                "decode_responses": True,
                "username": target.sentinel_username,
                "password": target.sentinel_password,
            },
        )
        client = sentinel.master_for(target.service, db=target.db, **secret, **options)
        return DirectExecutor(client, sentinel.sentinels)
    if target.kind == "cluster":
        cluster_options = {k: v for k, v in options.items() if k != "health_check_interval"}
        cluster_options.pop("retry")
        return ClusterExecutor(
            target, {**cluster_options, **secret, **tls}, KeySpace(namespace).lease
        )
    if target.kind == "unix":
        client = _RedisClass(unix_socket_path=target.path, db=target.db, **secret, **options)
        return DirectExecutor(client)
    host, port = target.hosts[0]
    client = _RedisClass(host=host, port=port, db=target.db, **secret, **tls, **options)
    return DirectExecutor(client)


def _connection_options() -> dict[str, Any]:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": _retry(),
        "decode_responses": True,
        "client_name": "chronod",
    }


def _retry() -> Any:
    # ConnectionError (including BusyLoadingError while a restarted server loads its AOF) and
    # TimeoutError: retried with jittered exponential backoff (about 0.15 s in all), then surfaced
    # as StoreUnavailable so the daemon's own backoff and "stop dispatching" logic takes over.
    return _RetryClass(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES)
