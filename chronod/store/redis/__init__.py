"""The Redis store: every read-check-write is one Lua script (``chronod/store/lua``).

The store is deliberately thin: it turns arguments into script calls and replies into records.
The logic, and why each step is safe to repeat, is in the scripts' header comments; the key layout
is in :mod:`chronod.store.keys`. The package, by concern:

* :mod:`~chronod.store.redis.connection`: clients, and where each batch of commands goes (one
  server, Sentinel's primary, the Redis Cluster node of the namespace);
* :mod:`~chronod.store.redis.scripts`: loading and sending the scripts, the generation every
  process presents (rollback detection), ``WAIT`` for replicas, Redis's errors as chronod's;
* :mod:`~chronod.store.redis.codec`: replies decoded into records, dispatch items encoded;
* :mod:`~chronod.store.redis.store`: :class:`RedisStore` itself.

Clock
    ``TIME`` inside each script is the only clock (Redis 7 replicates script effects, so writes
    that depend on it are safe). The one exception is :meth:`RedisStore.enqueue_manual`, which
    reads ``TIME`` just before its script: the run id (``NAME@<store time>~manual``) has to be
    fixed before the call for a retried call to be recognised as a repeat.

Queue
    Runs wait in ``queued:<queue>`` (a sorted set: ``not_before``, then creation), so a claim
    always takes exactly the oldest ready run of all the queues it was given. Each queue also has a
    stream with the consumer group ``workers`` that carries *tickets*, one per run that became
    ready: an idle worker blocks on ``XREADGROUP`` and wakes when there is something to claim.
    ``claim.lua`` keeps at least as many unread tickets per queue as ready runs (see its header);
    ``promote.lua`` issues the tickets of retries that became due and recovers tickets a crashed
    worker read but never handed over (``XAUTOCLAIM``). Attempt leases live in the ``leases``
    sorted set (``reap.lua``), not in the stream's pending list.

Retries and errors
    redis-py retries a command after a connection error or timeout (a few times, with backoff):
    that may run a script twice, which is safe because every script is idempotent (each header says
    why). Dispatch batches are pipelined (one round trip) and the pipeline is retried as a whole, so
    items that already ran answer ``DUPLICATE``, the documented "already done". Once retries are
    exhausted, connection-level failures become :class:`~chronod.errors.StoreUnavailable` (one line,
    no credentials); anything else is a :class:`~chronod.errors.StoreError`.
"""

from __future__ import annotations

from chronod.store.redis.scripts import ACK_TIMEOUT_MS, READ_ONLY, SCRIPTS
from chronod.store.redis.store import (
    ABANDONED_TICKET_MS,
    BLOCK_SLICE,
    DISPATCH_CHUNK,
    REAP_BATCH,
    RedisStore,
)

__all__ = [
    "ABANDONED_TICKET_MS",
    "ACK_TIMEOUT_MS",
    "BLOCK_SLICE",
    "DISPATCH_CHUNK",
    "READ_ONLY",
    "REAP_BATCH",
    "SCRIPTS",
    "RedisStore",
]
