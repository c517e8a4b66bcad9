"""Every Redis key chronod uses, named in one place.

All keys of a namespace share one hash tag, ``{namespace}:``, so they live in one Redis Cluster slot
and every Lua script may touch any of them. The Lua scripts receive :attr:`KeySpace.prefix` as
``ARGV[1]`` and build the per-entity keys below from it (a script cannot be handed keys it only
discovers while running, such as the waiting successor of a finished run);
``tests/test_store_redis.py`` checks after a workload that every key matches :data:`PATTERNS`.

=====================  ======  ===================================================================
key (after prefix)     type    holds
=====================  ======  ===================================================================
``lease``              hash    the leader lease: ``token``, ``epoch``, ``node``, ``expires``
``gen``                hash    the generation: ``n`` (write counter), ``at``, rollback fields
``absent``             —       never written: declared by every script (see _generation.lua)
``pending``            zset    held runs (replica acknowledgement outstanding) by creation seq
``epoch``              string  the lease epoch counter (outlives a released lease)
``seq``                string  creation counter of runs (the "then creation" of claim order)
``jobs``               set     names of every job with state (retired ones included)
``job:<name>``         hash    job state (fingerprint, watermark, last_slot, next_due, …)
``guard:<job>:<slot>`` string  the slot guard: the decision instant; expires after guard_ttl
``guard:<job>:m<t>``   string  a manual trigger's guard (makes a retried enqueue a repeat)
``run:<run_id>``       hash    a live run (queued, waiting or running)
``live``               zset    live run ids by creation seq
``live:<job>``         zset    the job's live run ids by creation seq (``active`` = its size)
``waiting:<job>``      zset    the job's waiting run ids by creation seq (overlap = queue)
``history:<job>``      list    JSON history entries, newest first, trimmed to ``history``
``queues``             set     every queue name ever used
``queued:<queue>``     zset    queued runs by ``not_before``; member ``<seq:016d> <run_id>``
``delayed:<queue>``    zset    queued runs not yet ready and without a ticket (retries)
``q:<queue>``          stream  tickets ("a run became ready here"); consumer group ``workers``
``leases``             zset    running run ids by attempt-lease expiry, for reaping
``token:<token>``      hash    an attempt token: ``run``, and ``status`` once finished
``workers``            hash    worker id → JSON (queues, running, concurrency)
``workers:seen``       zset    worker ids by last registration
``presence``           hash    member (``host:pid``) → JSON (role, stopped): announcements
``presence:seen``      zset    members by last announcement
``event_kinds``        hash    job name → JSON array of its event kinds (Store.set_event_kinds)
``chains``             hash    upstream job → JSON array of the links after it (Store.set_chains)
``outbox``             zset    outbox event ids by append seq (trimmed to the outbox limit)
``outbox:due``         zset    ``<seq:016d> <event id>`` by next delivery instant
``outbox:events``      hash    event id → JSON (kind, history entry, created, attempts, done)
``outbox:info``        hash    ``seq`` (append counter), ``dropped`` (events a full outbox dropped)
``deliveries``         hash    channel → JSON (ok_at, error, error_at): the last delivery of each
``external:<id>#<n>``  hash    an execution of run ``<id>`` (try ``n``) by another system:
                               ``executor``, ``started_at``, ``ended``; expires after a week
=====================  ======  ===================================================================

Instants are integer microseconds since the Unix epoch, written as decimal strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "workers"  # the consumer group of every queue stream

# Suffix patterns (after the prefix) of every key the scripts may create.
PATTERNS: tuple[str, ...] = (
    r"lease",
    r"gen",
    r"pending",
    r"epoch",
    r"seq",
    r"jobs",
    r"job:.+",
    r"guard:.+:m?\d+",
    r"run:.+",
    r"live",
    r"live:.+",
    r"waiting:.+",
    r"history:.+",
    r"queues",
    r"queued:.+",
    r"delayed:.+",
    r"q:.+",
    r"leases",
    r"token:.+",
    r"workers",
    r"workers:seen",
    r"presence",
    r"presence:seen",
    r"event_kinds",
    r"chains",
    r"outbox",
    r"outbox:due",
    r"outbox:events",
    r"outbox:info",
    r"deliveries",
    r"external:.+#\d+",
)


@dataclass(frozen=True)
class KeySpace:
    """The keys of one namespace. ``namespace`` must not contain braces (it is the hash tag)."""

    namespace: str

    def __post_init__(self) -> None:
        if not self.namespace or "{" in self.namespace or "}" in self.namespace:
            raise ValueError(f"namespace {self.namespace!r} must be non-empty and brace-free")

    @property
    def prefix(self) -> str:
        return "{" + self.namespace + "}:"

    @property
    def lease(self) -> str:
        return self.prefix + "lease"

    @property
    def gen(self) -> str:
        return self.prefix + "gen"

    @property
    def canary(self) -> str:
        return self.prefix + "absent"

    @property
    def pending(self) -> str:
        return self.prefix + "pending"

    @property
    def epoch(self) -> str:
        return self.prefix + "epoch"

    @property
    def jobs(self) -> str:
        return self.prefix + "jobs"

    @property
    def live(self) -> str:
        return self.prefix + "live"

    @property
    def queues(self) -> str:
        return self.prefix + "queues"

    @property
    def leases(self) -> str:
        return self.prefix + "leases"

    @property
    def workers(self) -> str:
        return self.prefix + "workers"

    @property
    def workers_seen(self) -> str:
        return self.prefix + "workers:seen"

    @property
    def presence(self) -> str:
        return self.prefix + "presence"

    @property
    def presence_seen(self) -> str:
        return self.prefix + "presence:seen"

    @property
    def event_kinds(self) -> str:
        return self.prefix + "event_kinds"

    @property
    def chains(self) -> str:
        return self.prefix + "chains"

    @property
    def outbox(self) -> str:
        return self.prefix + "outbox"

    @property
    def outbox_due(self) -> str:
        return self.prefix + "outbox:due"

    @property
    def outbox_events(self) -> str:
        return self.prefix + "outbox:events"

    @property
    def outbox_info(self) -> str:
        return self.prefix + "outbox:info"

    @property
    def deliveries(self) -> str:
        return self.prefix + "deliveries"

    def job(self, name: str) -> str:
        return f"{self.prefix}job:{name}"

    def guard(self, job: str, slot_us: int) -> str:
        return f"{self.prefix}guard:{job}:{slot_us}"

    def manual_guard(self, job: str, at_us: int) -> str:
        return f"{self.prefix}guard:{job}:m{at_us}"

    def token(self, token: str) -> str:
        return f"{self.prefix}token:{token}"

    def live_of(self, job: str) -> str:
        return f"{self.prefix}live:{job}"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def external(self, run_id: str, try_no: int) -> str:
        return f"{self.prefix}external:{run_id}#{try_no}"

    def history(self, job: str) -> str:
        return f"{self.prefix}history:{job}"

    def queued(self, queue: str) -> str:
        return f"{self.prefix}queued:{queue}"

    def delayed(self, queue: str) -> str:
        return f"{self.prefix}delayed:{queue}"

    def stream(self, queue: str) -> str:
        return f"{self.prefix}q:{queue}"

    def owns(self, key: str) -> bool:
        """Whether ``key`` is one of this namespace's keys (prefix and a known pattern)."""
        if not key.startswith(self.prefix):
            return False
        rest = key[len(self.prefix) :]
        return any(re.fullmatch(pattern, rest) for pattern in PATTERNS)
