""":class:`RedisStore`: the store contract on Redis, each method one script call (or a pipeline of
them). Scripts are sent by :class:`ScriptRunner` (runs of other systems: :mod:`.external`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from chronod.errors import StoreConfigError, StoreError
from chronod.instants import from_micros, slot_id, to_micros
from chronod.store import parse_redis_url, redact_url
from chronod.store._common import (
    SEEN_WINDOW,
    InstantMemo,
    MalformedRecord,
    manual_run_id,
    micros,
    output_tail,
    refusal,
    shown,
)
from chronod.store.base import (
    AttemptResult,
    Claim,
    DispatchResult,
    Fenced,
    FinishStatus,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MissedSlots,
    Outcome,
    Overlap,
    Presence,
    Quarantined,
    Role,
    RunRecord,
    SlotDispatch,
    Store,
    WorkerInfo,
)
from chronod.store.keys import GROUP, KeySpace
from chronod.store.redis.codec import (
    READ,
    DispatchEncoder,
    Fields,
    as_int,
    dispatch_results,
    job_of,
    pairs,
)
from chronod.store.redis.connection import DirectExecutor, Executor, executor_for
from chronod.store.redis.external import ExternalRuns
from chronod.store.redis.outbox import OutboxScripts
from chronod.store.redis.scripts import Call

log = logging.getLogger("chronod.store")
BLOCK_SLICE = 1.0  # seconds: a waiting claim looks again (reap, due retries, close()) this often
ABANDONED_TICKET_MS = 5_000  # a ticket read but not handed to claim.lua this long is recovered
CONSUMER_IDLE_MS = 3_600_000  # stream consumers (worker processes) forgotten after an idle hour
REAP_BATCH = 100
DISPATCH_CHUNK = 200  # slots per dispatch.lua call: bounds how long one call blocks the server
PUBLISH_BATCH = 1000  # held runs queued per publish.lua call


class RedisStore(OutboxScripts, ExternalRuns, Store):
    """:class:`~chronod.store.base.Store` on Redis (standalone, Sentinel or Cluster): see the
    package docs."""

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "chronod",
        history: int = 100,
        description: str = "redis",
        replica_acks: int = 0,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(
            executor or DirectExecutor(client),
            _keyspace(namespace),
            description=description,
            replica_acks=replica_acks,
        )
        self._history = max(int(history), 0)
        self._quarantined: list[Quarantined] = []  # since the last drain_quarantined()
        # Claims the replicas did not acknowledge, token → run id: never run, and handed back
        # until a hand-back is acknowledged (see _claim_once). By token: while the replicas lag,
        # each pass may claim (and hand back) the same run again, and any of those claims may be
        # the one a promoted replica holds.
        self._unreturned: dict[str, str] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "chronod",
        history: int = 100,
        replica_acks: int | None = None,
    ) -> RedisStore:
        """``redis://``, ``rediss://`` (TLS), ``unix://``, ``redis+sentinel://`` or
        ``redis(s)+cluster://`` (see :func:`chronod.store.parse_redis_url`).

        Connects lazily: a bad URL raises :class:`StoreConfigError` here, an unreachable server
        raises :class:`StoreUnavailable` on first use. ``replica_acks`` None: the default of the
        URL's kind (Sentinel and Cluster 1, a single server 0).
        """
        target = parse_redis_url(url)
        description = redact_url(url)
        _keyspace(namespace)
        acks = target.default_acks if replica_acks is None else replica_acks
        return cls(
            None,
            namespace=namespace,
            history=history,
            description=description,
            replica_acks=acks,
            executor=executor_for(target, namespace),
        )

    def _publish_pending(self) -> None:
        """Queue every held run (publish.lua). Called after an acknowledged dispatch, and at every
        leader load (runs a previous leader held, or held under a replica_acks since lowered)."""
        while self._call("publish", [self._keys.pending], PUBLISH_BATCH):
            pass

    # -- clock -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return from_micros(self._time_us())

    # -- leader lease ------------------------------------------------------------------------------

    def acquire_lease(self, node: str, token: str, ttl: timedelta) -> Lease | None:
        reply = self._call(
            "acquire",
            [self._keys.lease, self._keys.epoch],
            node,
            token,
            micros(ttl),
            self._gen.epoch_floor,
        )
        if reply[0] != "ok":
            self._gen.saw_epoch(as_int(reply[1]))
            return None
        _, epoch, holder, expires = reply
        self._gen.saw_epoch(as_int(epoch))
        return Lease(
            token=token, epoch=as_int(epoch), node=holder, expires_at=from_micros(as_int(expires))
        )

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        reply = self._call("renew", [self._keys.lease], lease.token, lease.epoch, micros(ttl))
        if reply[0] != "ok":
            return None
        return Lease(
            token=lease.token,
            epoch=lease.epoch,
            node=lease.node,
            expires_at=from_micros(as_int(reply[1])),
        )

    def release_lease(self, lease: Lease) -> None:
        self._call("release", [self._keys.lease], lease.token, lease.epoch)

    def leader(self) -> LeaderInfo | None:
        reply = self._call("leader", [self._keys.lease])
        if not reply:
            return None
        node, epoch, expires = reply
        try:
            return LeaderInfo(
                node=node, epoch=as_int(epoch), expires_at=from_micros(as_int(expires))
            )
        except (ValueError, OverflowError):  # a forged lease proves no leader
            return None

    def _fenced(self, lease: Lease, reply: Sequence[Any] = ()) -> Fenced:
        """The refusal of a leader write: a ``fenced_reply`` (_common.lua) says what the store
        holds instead."""
        epoch, node = (reply[1], reply[2]) if len(reply) >= 3 else (None, None)
        return Fenced(refusal(lease, (as_int(epoch) if epoch else None, node)))

    # -- job state ---------------------------------------------------------------------------------

    def sync_jobs(
        self, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        instants = InstantMemo()  # jobs share few distinct next slots
        flat: list[str] = []
        for job in jobs:
            due = "" if job.next_due is None else instants[job.next_due].text
            flat += (job.name, job.fingerprint, due)
        reply = self._call(
            "sync_jobs",
            [self._keys.lease, self._keys.jobs],
            lease.token,
            lease.epoch,
            to_micros(loaded_at),
            json.dumps(flat, separators=(",", ":")),
            strict=True,
        )
        if reply[0] == "fenced":
            raise self._fenced(lease, reply)
        self._publish_pending()
        return [
            READ.job_state(fields, str(name), int(active))
            for name, active, fields in json.loads(reply[1])
        ]

    def retire_jobs(self, lease: Lease, keep: Sequence[str]) -> list[str]:
        reply = self._call(
            "retire",
            [self._keys.lease, self._keys.jobs],
            lease.token,
            lease.epoch,
            *keep,
            strict=True,
        )
        if reply[0] == "fenced":
            raise self._fenced(lease, reply)
        return [str(name) for name in reply[1]]

    def job_states(self) -> dict[str, JobState]:
        states = (READ.job(reply) for reply in self._call("read_jobs", [self._keys.jobs]))
        return {state.name: state for state in sorted(states, key=lambda s: s.name)}

    def set_paused(self, job: str, paused: bool) -> JobState:
        reply = self._call(
            "set_paused", [self._keys.job(job), self._keys.jobs], job, "1" if paused else "0"
        )
        return READ.job(reply)

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        """Chunks of items, one script call each, all pipelined: one round trip for the batch."""
        encoder = DispatchEncoder()
        calls: list[Call] = []
        run_ids: list[str] = []
        hold = "1" if self._acks else "0"
        for start in range(0, len(items), DISPATCH_CHUNK):
            chunk = encoder.chunk(items[start : start + DISPATCH_CHUNK], run_ids)
            args: list[str | int] = [lease.token, lease.epoch, self._history, chunk, hold]
            calls.append(("dispatch", [self._keys.lease], args))
        if not calls:
            return []
        # With replica_acks, the runs are held (not claimable) until WAIT says enough replicas
        # have them; only then does publish.lua queue them. NotAcknowledged leaves them held:
        # the next acknowledged dispatch (of any leader) publishes them.
        replies = self._pipelined(calls, strict=True, wait=True)
        if self._acks:
            self._publish_pending()
        results: list[DispatchResult] = []
        named = iter(run_ids)
        for reply in replies:
            if reply[0] == "fenced":
                # This chunk's items and all later ones were refused (a lease never revives).
                raise self._fenced(lease, reply)
            results += dispatch_results(reply, named)
        return results

    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        """One advance.lua call per item, all pipelined: one round trip for the batch."""
        calls: list[Call] = []
        for item in items:
            args: list[str | int] = [
                lease.token,
                lease.epoch,
                item.job,
                item.fingerprint,
                item.missed_count,
                "" if item.next_due is None else to_micros(item.next_due),
                self._history,
            ]
            for slot in sorted(item.missed):
                args.extend((to_micros(slot), slot_id(item.job, slot)))
            calls.append(("advance", [self._keys.lease, self._keys.job(item.job)], args))
        states: list[JobState] = []
        for reply in self._pipelined(calls, strict=True) if calls else []:
            if reply[0] == "fenced":
                # This item and all later ones were refused (a lease never revives).
                raise self._fenced(lease, reply)
            states.append(READ.job(reply[1]))
        return states

    # -- manual runs -------------------------------------------------------------------------------

    def enqueue_manual(
        self, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        """Store time is read just before the script: the run id (``NAME@<store time>~manual``)
        has to be fixed before the call for a retried call to be recognised as a repeat."""
        nonce = secrets.token_hex(8)
        while True:
            at = self._time_us()
            run_id = manual_run_id(job, at)
            args: list[str | int] = [job, queue, digest, overlap, max_attempts, run_id, at, nonce]
            call = ("enqueue_manual", [self._keys.manual_guard(job, at)], args)
            reply = self._pipelined([call], wait=True)[0]
            if reply[0] == "ok":
                return READ.run(pairs(reply[1]), ended=False)
            if reply[0] == "repeat":
                record = READ.found_run(reply[1])
                if record is None:  # ran, finished and left the history within one retry
                    raise StoreError(f"manual run {run_id} vanished while being queued")
                return record
            # 'taken': another trigger of this job got the same microsecond; read the time again.

    # -- workers -----------------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: Sequence[str], token: str, ttl: timedelta, wait: float
    ) -> Claim | None:
        """Reap, promote and claim in one round trip; while nothing is ready, block on tickets.

        The wait is cut into slices of at most BLOCK_SLICE, each ending no later than the next
        delayed retry or attempt-lease expiry promote.lua reported, so a run that becomes ready
        without a ticket being written (a retry coming due, an attempt to reap) is taken on time.
        """
        names = list(dict.fromkeys(queues))
        if not names:
            return None
        deadline = time.monotonic() + max(wait, 0.0)
        tickets: dict[str, list[str]] = {}
        # close() from another thread ends the wait. It is checked before every pass, and an error
        # while closed means "closed", because how a blocking read reacts to its socket being
        # closed depends on the redis-py release: 8.1 raises from the half-closed buffer, 8.2
        # retries on a new connection and returns empty once the block runs out.
        while not self._closed.is_set():
            try:
                claimed, now_us, wake_us = self._claim_once(worker, names, token, ttl, tickets)
                if claimed is not None:
                    return claimed
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                block = min(remaining, BLOCK_SLICE)
                if wake_us is not None:
                    block = min(block, max((wake_us - now_us) / 1e6, 0.001))
                tickets = self._read_tickets(worker, names, block)
            except Exception:
                if self._closed.is_set():
                    return None
                raise
        return None

    def _claim_once(
        self,
        worker: str,
        names: Sequence[str],
        token: str,
        ttl: timedelta,
        tickets: Mapping[str, Sequence[str]],
    ) -> tuple[Claim | None, int, int | None]:
        leases = self._keys.leases
        promote_keys = [leases]
        claim_keys: list[str] = []
        for name in names:
            promote_keys += [self._keys.delayed(name), self._keys.stream(name)]
            claim_keys += [
                self._keys.queued(name),
                self._keys.delayed(name),
                self._keys.stream(name),
            ]
        while True:
            claim_args: list[str | int] = [token, worker, micros(ttl), len(names), *names]
            claim_args += [" ".join(tickets.get(name, ())) for name in names]
            claim_args.append(self._history)
            # Unacknowledged claims go back first, before reap can take one for a dead worker's.
            returning = dict(self._unreturned)
            calls: list[Call] = [self._hand_back_call(r, t) for t, r in returning.items()]
            calls += [
                ("reap", [leases], [self._history, REAP_BATCH]),
                ("promote", promote_keys, [ABANDONED_TICKET_MS, CONSUMER_IDLE_MS, *names]),
                ("claim", claim_keys, claim_args),
            ]
            replies, acked = self._acknowledged(calls, wait=True)
            (_, (now_us, wake), reply) = replies[len(returning) :]
            if acked:
                for spent in returning:
                    del self._unreturned[spent]
            for run_id in reply[-1]:
                log.warning(
                    "run %s ended 'uncertain' instead of being claimed: it was created before "
                    "the store went back to an older state",
                    run_id,
                )
            if reply[0] != "claim":
                return None, as_int(now_us), as_int(wake) if wake else None
            fields = pairs(reply[1])
            try:
                claimed = READ.claim(fields)
            except MalformedRecord as exc:
                self._quarantine(fields, token, str(exc))
                # That token is spent on the quarantined attempt (claim.lua would answer 'none'
                # for it): the next pass, at once, takes the next ready run with a token of its
                # own.
                token, tickets = f"{token}.q", {}
                continue
            if not acked:
                # Nothing may run on a claim a failover could take back, yet the claim may live
                # on in a replica that saw it but whose acknowledgement came too late; promoted,
                # it would hold a run nobody runs, ended 'lost' once its attempt lease ran out.
                # So the run is handed back now and again in every later claim round trip until
                # a hand-back is acknowledged (a repeat finds the token gone and does nothing).
                self._unreturned[claimed.token] = claimed.run.run_id
                with contextlib.suppress(StoreError):
                    self.hand_back(claimed.run.run_id, claimed.token)
                raise self._not_acknowledged()
            return claimed, as_int(now_us), None

    def _quarantine(self, fields: Fields, token: str, problem: str) -> None:
        """End a malformed run this claim started as ``quarantined``, through finish.lua
        ("Malformed records" in the contract); it is reported by drain_quarantined."""
        run_id = fields.get("run_id")
        if not isinstance(run_id, str) or not run_id:  # the claim recorded which run it took
            token_key = self._keys.token(token)
            run_id = str(self._single(lambda pipe: pipe.hget(token_key, "run")) or "")
        error = f"quarantined: {problem}"
        try:
            self.finish(run_id, token, AttemptResult(outcome=Outcome.QUARANTINED, error=error))
        except StoreError as exc:
            problem += (
                f"; could not be quarantined ({exc}): it is reclaimed once its attempt lease "
                "expires"
            )
        job = fields.get("job")
        self._quarantined.append(
            Quarantined(
                run_id=run_id, job=job if isinstance(job, str) else shown(job), problem=problem
            )
        )

    def drain_quarantined(self) -> list[Quarantined]:
        found, self._quarantined = self._quarantined, []
        return found

    def _read_tickets(
        self, worker: str, names: Sequence[str], block: float
    ) -> dict[str, list[str]]:
        """Block up to ``block`` seconds for tickets; they go to claim.lua on the next pass."""
        streams = {self._keys.stream(name): name for name in names}
        try:
            reply: Any = self._single(
                lambda pipe: pipe.xreadgroup(
                    GROUP,
                    worker,
                    dict.fromkeys(streams, ">"),
                    count=1,
                    block=max(1, int(block * 1000)),  # BLOCK 0 would mean "forever"
                )
            )
        except StoreError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted meanwhile; promote.lua recreates it
                return {}
            raise
        entries = reply.items() if isinstance(reply, dict) else (reply or [])
        tickets: dict[str, list[str]] = {}
        for stream, messages in entries:
            if messages:
                tickets[streams[stream]] = [message_id for message_id, _ in messages]
        return tickets

    def heartbeat(self, run_id: str, token: str, ttl: timedelta) -> bool:
        keys = [self._keys.run(run_id), self._keys.leases]
        return bool(self._call("heartbeat", keys, run_id, token, micros(ttl)))

    def finish(self, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        extra: dict[str, str] = {"output": output_tail(result.output)}
        if result.exit_code is not None:
            extra["exit_code"] = str(result.exit_code)
        if result.error is not None:
            extra["error"] = result.error
        retry_at = "" if result.retry_at is None else to_micros(result.retry_at)
        args: list[str | int] = [
            run_id,
            token,
            result.outcome.value,
            json.dumps(extra),
            retry_at,
            self._history,
        ]
        call = ("finish", [self._keys.run(run_id), self._keys.token(token)], args)
        # Acknowledged, or NotAcknowledged: the worker tries again (a repeat is harmless), so a
        # result a failover could take back is never taken as recorded.
        return FinishStatus(self._pipelined([call], wait=True)[0])

    def hand_back(self, run_id: str, token: str) -> bool:
        return bool(self._pipelined([self._hand_back_call(run_id, token)])[0])

    def _hand_back_call(self, run_id: str, token: str) -> Call:
        return ("hand_back", [self._keys.run(run_id), self._keys.token(token)], [run_id, token])

    def reap(self) -> list[str]:
        reaped: list[str] = []
        while True:
            batch = self._call("reap", [self._keys.leases], self._history, REAP_BATCH)
            reaped.extend(str(run_id) for run_id in batch)
            if len(batch) < REAP_BATCH:
                return reaped

    # -- workers and presence: two rosters of members seen lately ----------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        # seen_at is store time: the caller's clock is never trusted for liveness.
        details = {
            "queues": list(info.queues),
            "running": info.running,
            "concurrency": info.concurrency,
        }
        self._mark_seen(self._keys.workers, self._keys.workers_seen, info.worker, details)

    def workers(self) -> list[WorkerInfo]:
        found: list[WorkerInfo] = []
        for worker, seen_at, text in self._seen(self._keys.workers, self._keys.workers_seen):
            try:
                details = json.loads(text)
                found.append(
                    WorkerInfo(
                        worker=str(worker),
                        queues=tuple(str(queue) for queue in details["queues"]),
                        seen_at=from_micros(as_int(seen_at)),
                        running=int(details["running"]),
                        concurrency=int(details["concurrency"]),
                    )
                )
            except (ValueError, TypeError, KeyError, OverflowError):
                continue  # a forged entry; real ones are rewritten every few seconds
        return found

    def announce(self, member: str, role: Role, *, stopped: bool = False) -> None:
        # seen_at is store time, like a worker's registration.
        details = {"role": role, "stopped": stopped}
        self._mark_seen(self._keys.presence, self._keys.presence_seen, member, details)

    def presences(self) -> list[Presence]:
        found: list[Presence] = []
        for member, seen_at, text in self._seen(self._keys.presence, self._keys.presence_seen):
            details = json.loads(text)
            found.append(
                Presence(
                    member=member,
                    role="worker" if details["role"] == "worker" else "scheduler",
                    seen_at=from_micros(as_int(seen_at)),
                    stopped=bool(details["stopped"]),
                )
            )
        return found

    def _mark_seen(self, roster: str, seen: str, member: str, details: object) -> None:
        """Record ``member`` (with ``details``) in a roster: mark_seen.lua."""
        window = micros(SEEN_WINDOW)
        self._call("mark_seen", [roster, seen], member, json.dumps(details), window)

    def _seen(self, roster: str, seen: str) -> Iterator[tuple[Any, Any, Any]]:
        """A roster's members seen within the window, newest first: (member, µs, JSON text)."""
        reply = self._call("seen", [roster, seen], micros(SEEN_WINDOW))
        for i in range(0, len(reply), 3):
            yield reply[i], reply[i + 1], reply[i + 2]

    # -- reading -----------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord | None:
        job = job_of(run_id)
        keys = [self._keys.run(run_id), self._keys.history(job)]
        return READ.found_run(self._call("read_run", keys, run_id, job))

    def live_runs(self, job: str | None = None) -> list[RunRecord]:
        key = self._keys.live if job is None else self._keys.live_of(job)
        flats = self._call("live_runs", [key])
        return [READ.readable(pairs(flat), ended=False) for flat in flats]

    def history(self, job: str, limit: int) -> list[RunRecord]:
        if limit <= 0:
            return []
        key = self._keys.history(job)
        entries = self._single(lambda pipe: pipe.lrange(key, 0, limit - 1))
        return [READ.entry(entry) for entry in entries]

    def queue_depths(self) -> dict[str, int]:
        reply = self._call("queue_depths", [self._keys.queues])
        return {str(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}


def _keyspace(namespace: str) -> KeySpace:
    try:
        return KeySpace(namespace)
    except ValueError as exc:
        raise StoreConfigError(f"Redis store: {exc}") from None
