"""The Redis store: every read-check-write is one Lua script (``chronod/store/lua``).

This module is deliberately thin: it turns arguments into script calls and replies into records.
The logic, and why each step is safe to repeat, is in the scripts' header comments; the key layout
is in :mod:`chronod.store.keys`.

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

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel

from chronod.errors import StoreConfigError, StoreDiskError, StoreError, StoreUnavailable
from chronod.instants import format_utc, from_micros, slot_id, to_micros
from chronod.store import RedisTarget, parse_redis_url, redact_url
from chronod.store._redisconn import ClusterExecutor, DirectExecutor, Executor, Op
from chronod.store.base import (
    MAX_MICROS,
    OUTPUT_TAIL,
    UNREADABLE_INSTANT,
    AttemptResult,
    Claim,
    DispatchResult,
    DispatchStatus,
    Fenced,
    FinishStatus,
    JobState,
    JobSync,
    LeaderInfo,
    Lease,
    MalformedRecord,
    MissedSlots,
    NotAcknowledged,
    Outcome,
    Overlap,
    Presence,
    Quarantined,
    Role,
    RolledBack,
    RunRecord,
    RunState,
    SlotDispatch,
    Store,
    WorkerInfo,
    lenient,
    shown,
    superseded_reason,
)
from chronod.store.keys import GROUP, KeySpace

log = logging.getLogger("chronod.store")

SCRIPTS = (
    "acquire",
    "renew",
    "release",
    "leader",
    "sync_jobs",
    "retire",
    "set_paused",
    "read_jobs",
    "dispatch",
    "advance",
    "enqueue_manual",
    "claim",
    "promote",
    "reap",
    "heartbeat",
    "finish",
    "hand_back",
    "read_run",
    "live_runs",
    "queue_depths",
    "register_worker",
    "workers",
    "announce",
    "presences",
    "publish",
)
# Scripts that write nothing of their own (the generation prologue may still record a rollback).
READ_ONLY = frozenset(
    {"leader", "read_jobs", "read_run", "live_runs", "queue_depths", "workers", "presences"}
)

SOCKET_TIMEOUT = 2.0  # seconds; below the lease renewal period, above BLOCK_SLICE (XREADGROUP)
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 30  # seconds idle before a connection is PINGed before use
RETRIES = 2  # per command, on connection errors and timeouts (every script is idempotent)
BLOCK_SLICE = 1.0  # seconds: a waiting claim looks again (reap, due retries, close()) this often
ABANDONED_TICKET_MS = 5_000  # a ticket read but not handed to claim.lua this long is recovered
CONSUMER_IDLE_MS = 3_600_000  # stream consumers (worker processes) forgotten after an idle hour
REAP_BATCH = 100
DISPATCH_CHUNK = 200  # slots per dispatch.lua call: bounds how long one call blocks the server
WORKER_WINDOW = timedelta(minutes=1)
# How long a write waits for its replica acknowledgements (WAIT) before it is treated as not
# durable: well below the lease (the leader stops dispatching) and the attempt lease.
ACK_TIMEOUT_MS = 500
PUBLISH_BATCH = 1000  # held runs queued per publish.lua call
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
# The server answers but cannot take writes: full (maxmemory with noeviction; redis-py raises
# OutOfMemoryError without the OOM prefix) or unable to persist (stop-writes-on-bgsave-error).
# Like a full disk under SQLite: retried, reported, never fatal.
_STORAGE_REPLIES = ("OOM", "MISCONF")
_MICRO = timedelta(microseconds=1)


# redis-py's annotations differ between the releases pyproject.toml admits (untyped helpers in
# some, sync/async unions in others), so chronod holds clients, pipelines and the classes it
# constructs them with as ``Any``: the type check then means the same with every release.
_RedisClass: Any = redis.Redis
_SentinelClass: Any = Sentinel
_RetryClass: Any = Retry


def _retry() -> Any:
    # ConnectionError (including BusyLoadingError while a restarted server loads its AOF) and
    # TimeoutError: retried with jittered exponential backoff (about 0.15 s in all), then surfaced
    # as StoreUnavailable so the daemon's own backoff and "stop dispatching" logic takes over.
    return _RetryClass(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES)


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


def _load_script_sources() -> dict[str, str]:
    """Each script as sent to Redis: _common.lua, the generation prologue, then the script's own
    code as the function the prologue runs (see _generation.lua)."""
    folder = resources.files("chronod.store").joinpath("lua")
    common = folder.joinpath("_common.lua").read_text(encoding="utf-8")
    prologue = folder.joinpath("_generation.lua").read_text(encoding="utf-8")
    return {
        name: (
            f"{common}\n{prologue}\nlocal function body()\n"
            + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
            + "\nend\nreturn generation(body)\n"
        )
        for name in SCRIPTS
    }


def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()


def _evalsha(sha: str, keys: Sequence[str], args: Sequence[str | int]) -> Op:
    return lambda pipe: pipe.evalsha(sha, len(keys), *keys, *args)


def _load(source: str) -> Op:
    return lambda pipe: pipe.script_load(source)


def _refusal(lease: Lease, epoch: Any, node: Any) -> str:
    """Why the store refused ``lease``, from the lease it holds instead (for the log)."""
    ours = f"lease epoch {lease.epoch} of {lease.node}"
    if not epoch:
        return f"{ours} refused: the store holds no lease (it expired, or the store lost it)"
    found = _int(epoch)
    if found < lease.epoch:
        return (
            f"{ours} refused: the store holds epoch {found} of {node}, older than ours "
            "(the store went back to an older state)"
        )
    if found == lease.epoch:
        return f"{ours} refused: it expired in the store"
    return f"{ours} refused: another leader holds a newer epoch ({found}, {node})"


class _Generation:
    """What this store object knows of the store's history (see _generation.lua): the highest
    generation it knows to be durable (and the store time it was written at), the rollback count
    it last saw, and the highest lease epoch it has seen (its floor for new epochs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen = 0
        self.seen_at = 0
        self.rollbacks: str = ""  # '' until the first reply
        self.epoch_floor = 0
        self._last: list[str] = []

    def presented(self, strict: bool) -> tuple[str, str, str, str]:
        with self._lock:
            return (str(self.seen), str(self.seen_at), self.rollbacks, "1" if strict else "0")

    def saw(self, info: Sequence[Any], *, durable: bool) -> bool:
        """Record a reply's generation; True the first time it shows a new rollback."""
        n, rollbacks = _int(info[0]), str(info[1])
        with self._lock:
            if durable and n > self.seen:
                self.seen = n
                if len(info) > 5 and info[5]:
                    self.seen_at = max(self.seen_at, _int(info[5]))
            new = self.rollbacks not in ("", rollbacks)
            self.rollbacks = rollbacks
            self._last = [str(part) for part in info]
            return new

    def saw_epoch(self, epoch: int) -> None:
        with self._lock:
            self.epoch_floor = max(self.epoch_floor, epoch)

    def describe(self) -> str:
        with self._lock:
            last = self._last
        if len(last) < 5 or not last[3]:
            return "rollback count " + (last[1] if len(last) > 1 else "?")
        return (
            f"rollback #{last[1]}: generation {last[3]} found where {last[4]} had been "
            f"acknowledged, detected at {format_utc(from_micros(_int(last[2])))}"
        )


def _executor(target: RedisTarget, namespace: str) -> Executor:
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _us(delta: timedelta) -> int:
    return delta // _MICRO


def _instant(text: str | None) -> datetime | None:
    return None if text is None or text == "" else from_micros(_int(text))


def _int(text: str | int) -> int:
    # Redis prints sorted-set scores with %.17g: integral below 2**53, but be exact either way.
    if isinstance(text, int):
        return text
    return int(text) if text.lstrip("-").isdigit() else int(float(text))


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _job_state(reply: Sequence[Any]) -> JobState:
    name, active, flat = reply
    return _job_state_of(name, active, _pairs(flat))


def _job_state_of(name: str, active: int | str, fields: Mapping[str, Any]) -> JobState:
    """A job hash as read; a field that cannot be read reads as unset, so status and metrics keep
    answering."""
    outcome = lenient(_outcome_field, fields, "last_outcome", None)
    return JobState(
        name=str(name),
        fingerprint=lenient(_text_field, fields, "fingerprint", ""),
        watermark=lenient(_optional_instant_field, fields, "watermark", None),
        last_slot=lenient(_optional_instant_field, fields, "last_slot", None),
        next_due=lenient(_optional_instant_field, fields, "next_due", None),
        paused=fields.get("paused") == "1",
        last_outcome=outcome if fields.get("last_outcome") else None,
        last_outcome_at=lenient(_optional_instant_field, fields, "last_outcome_at", None),
        last_success_at=lenient(_optional_instant_field, fields, "last_success_at", None),
        active=int(active),
        missed=lenient(_int_field, fields, "missed", 0) if "missed" in fields else 0,
    )


# -- decoding records ------------------------------------------------------------------------------
# Anyone with write access can leave a run hash or a history entry chronod cannot read (a field
# missing, not a number, an instant out of range, an entry that is not a JSON object). Decoding
# checks every field and raises MalformedRecord naming the first bad one; readers then show the
# record as quarantined and claim quarantines the run (see chronod.store.base).

Fields = Mapping[str, Any]


def _present(fields: Fields, name: str) -> Any:
    if name not in fields:
        raise MalformedRecord(f"{name} is missing")
    return fields[name]


def _text_field(fields: Fields, name: str) -> str:
    value = _present(fields, name)
    if not isinstance(value, str):
        raise MalformedRecord(f"{name} is not text ({shown(value)})")
    return value


def _int_field(fields: Fields, name: str, low: int = 0, high: int | None = None) -> int:
    value = _present(fields, name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedRecord(f"{name} is not an integer ({shown(value)})")
    try:
        number = _int(value)
    except (ValueError, OverflowError):
        raise MalformedRecord(f"{name} is not an integer ({shown(value)})") from None
    if number < low or (high is not None and number > high):
        raise MalformedRecord(f"{name} is out of range ({shown(value)})")
    return number


def _instant_field(fields: Fields, name: str) -> datetime:
    return from_micros(_int_field(fields, name, 0, MAX_MICROS))


def _optional_instant_field(fields: Fields, name: str) -> datetime | None:
    return None if fields.get(name) in (None, "") else _instant_field(fields, name)


def _optional_text_field(fields: Fields, name: str) -> str | None:
    return None if fields.get(name) is None else _text_field(fields, name)


def _flag_field(fields: Fields, name: str) -> bool:
    value = _present(fields, name)
    if value not in ("0", "1"):
        raise MalformedRecord(f"{name} is not 0 or 1 ({shown(value)})")
    return bool(value == "1")


def _outcome_field(fields: Fields, name: str) -> Outcome:
    value = _present(fields, name)
    try:
        return Outcome(value)
    except ValueError:
        raise MalformedRecord(f"{name} is not an outcome ({shown(value)})") from None


def _state_field(fields: Fields, name: str) -> RunState:
    value = _present(fields, name)
    try:
        return RunState(value)
    except ValueError:
        raise MalformedRecord(f"{name} is not a run state ({shown(value)})") from None


def _record(fields: Fields, *, ended: bool) -> RunRecord:
    """A live run (hash fields) or, with ``ended``, a history entry (JSON object), every field
    checked (raises MalformedRecord)."""
    exit_code = None
    if fields.get("exit_code") is not None:
        exit_code = _int_field(fields, "exit_code", -(2**63))
    return RunRecord(
        run_id=_text_field(fields, "run_id"),
        job=_text_field(fields, "job"),
        slot=_instant_field(fields, "slot"),
        manual=_flag_field(fields, "manual"),
        state=_outcome_field(fields, "state") if ended else _state_field(fields, "state"),
        queue=_text_field(fields, "queue"),
        digest=_text_field(fields, "digest"),
        epoch=_int_field(fields, "epoch"),
        attempt=_int_field(fields, "attempt"),
        max_attempts=_int_field(fields, "max_attempts"),
        created_at=_instant_field(fields, "created_at"),
        not_before=_optional_instant_field(fields, "not_before"),
        started_at=_optional_instant_field(fields, "started_at"),
        finished_at=_optional_instant_field(fields, "finished_at"),
        worker=_optional_text_field(fields, "worker"),
        exit_code=exit_code,
        output=_text_field(fields, "output") if "output" in fields else "",
        error=_optional_text_field(fields, "error"),
    )


def _readable(fields: Fields, *, ended: bool) -> RunRecord:
    """:func:`_record`, or for a malformed record the quarantined record that stands for it."""
    try:
        return _record(fields, ended=ended)
    except MalformedRecord as exc:
        return _unreadable(fields, str(exc))


def _readable_entry(text: str) -> RunRecord:
    """A history entry (JSON text) as :func:`_readable` decodes it."""
    try:
        fields = json.loads(text)
    except ValueError:
        return _unreadable({}, f"history entry is not JSON ({shown(text)})")
    if not isinstance(fields, dict):
        return _unreadable({}, f"history entry is not a JSON object ({shown(text)})")
    return _readable(fields, ended=True)


def _unreadable(fields: Fields, problem: str) -> RunRecord:
    """What can be read of a malformed run, as a quarantined record (chronod.store.base)."""
    error = f"unreadable record: {problem}"
    if fields.get("state") == Outcome.QUARANTINED.value:  # quarantined by claim: says why
        error = lenient(_text_field, fields, "error", error)
    return RunRecord(
        run_id=lenient(_text_field, fields, "run_id", "?"),
        job=lenient(_text_field, fields, "job", "?"),
        slot=lenient(_instant_field, fields, "slot", UNREADABLE_INSTANT),
        manual=lenient(_flag_field, fields, "manual", False),
        state=Outcome.QUARANTINED,
        queue=lenient(_text_field, fields, "queue", ""),
        digest=lenient(_text_field, fields, "digest", ""),
        epoch=lenient(_int_field, fields, "epoch", 0),
        attempt=lenient(_int_field, fields, "attempt", 0),
        max_attempts=lenient(_int_field, fields, "max_attempts", 0),
        created_at=lenient(_instant_field, fields, "created_at", UNREADABLE_INSTANT),
        not_before=lenient(_optional_instant_field, fields, "not_before", None),
        started_at=lenient(_optional_instant_field, fields, "started_at", None),
        finished_at=lenient(_optional_instant_field, fields, "finished_at", None),
        worker=lenient(_optional_text_field, fields, "worker", None),
        output=lenient(_text_field, fields, "output", ""),
        error=error,
    )


def _found_run(reply: Any) -> RunRecord | None:
    """Decode find_run's reply: {'live', HGETALL} | {'history', json} | nil."""
    if not reply:
        return None
    kind, payload = reply
    if kind == "live":
        return _readable(_pairs(payload), ended=False)
    return _readable_entry(payload)


def _claim(fields: Fields) -> Claim:
    """A claim.lua reply (the running run's hash), every field checked (MalformedRecord)."""
    return Claim(
        run=_record(fields, ended=False),
        token=_text_field(fields, "token"),
        attempt=_int_field(fields, "attempt"),
        lease_expires_at=_instant_field(fields, "lease_expires"),
    )


def _output_tail(text: str) -> str:
    """At most OUTPUT_TAIL bytes of UTF-8 from the end of ``text``, cut on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= OUTPUT_TAIL:
        return text
    return data[-OUTPUT_TAIL:].decode("utf-8", errors="ignore")


_DISPATCH_STATUS = {status.value: status for status in DispatchStatus}
# Results that name their run (the others decided nothing that has a run id).
_NAMED = frozenset(
    {
        DispatchStatus.QUEUED,
        DispatchStatus.WAITING,
        DispatchStatus.SKIPPED,
        DispatchStatus.DUPLICATE,
        DispatchStatus.UNCERTAIN,
    }
)


class _DispatchEncoder:
    """Encodes dispatch items for dispatch.lua, once per distinct instant and duration.

    The items of one tick share few distinct slots, next slots and guard lifetimes (1,000 jobs
    due at the same second share one of each), and formatting an instant (its microseconds and
    the ISO text of the slot id) cost more than everything else per item, so each distinct value
    is formatted once per :meth:`RedisStore.dispatch` call.
    """

    def __init__(self) -> None:
        self._slots: dict[datetime, tuple[str, str]] = {}  # slot -> (µs, ISO text)
        self._dues: dict[datetime | None, str] = {None: ""}
        self._ttls: dict[timedelta, str] = {}

    def chunk(self, items: Sequence[SlotDispatch], run_ids: list[str]) -> str:
        """The JSON argument of one dispatch.lua call; appends each item's run id to ``run_ids``."""
        flat: list[str] = []
        slots, dues, ttls = self._slots, self._dues, self._ttls
        for item in items:
            slot = slots.get(item.slot)
            if slot is None:
                slot = slots[item.slot] = (str(to_micros(item.slot)), format_utc(item.slot))
            due = dues.get(item.next_due)
            if due is None:
                assert item.next_due is not None
                due = dues[item.next_due] = str(to_micros(item.next_due))
            ttl = ttls.get(item.guard_ttl)
            if ttl is None:
                ttl = ttls[item.guard_ttl] = str(
                    max(1, item.guard_ttl // timedelta(milliseconds=1))
                )
            run_id = f"{item.job}@{slot[1]}"  # instants.slot_id, with the formatting memoized
            run_ids.append(run_id)
            flat += (
                item.job,
                item.fingerprint,
                slot[0],
                due,
                item.queue,
                item.digest,
                item.overlap,
                str(item.max_attempts),
                ttl,
                run_id,
                "" if item.superseded_by is None else superseded_reason(item.superseded_by),
            )
        return json.dumps(flat, separators=(",", ":"))


def _job_of(run_id: str) -> str:
    # Run ids are NAME@<instant>[~manual]; the instant never contains '@', the name might.
    return run_id.rsplit("@", 1)[0]


class RedisStore(Store):
    """:class:`~chronod.store.base.Store` on Redis (standalone, Sentinel or Cluster); see the module
    docs."""

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
        try:
            self._keys = KeySpace(namespace)
        except ValueError as exc:
            raise StoreConfigError(f"Redis store: {exc}") from None
        self._exec: Executor = executor or DirectExecutor(client)
        self._history = max(int(history), 0)
        self._quarantined: list[Quarantined] = []  # since the last drain_quarantined()
        self._description = description
        self._acks = max(int(replica_acks), 0)
        self._scripts = _load_script_sources()
        self._shas = {name: _sha1(source) for name, source in self._scripts.items()}
        self._closed = threading.Event()  # also ends a claim() waiting in another thread
        self._gen = _Generation()

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
        try:
            KeySpace(namespace)
        except ValueError as exc:
            raise StoreConfigError(f"Redis store: {exc}") from None
        acks = target.default_acks if replica_acks is None else replica_acks
        executor = _executor(target, namespace)
        return cls(
            None,
            namespace=namespace,
            history=history,
            description=description,
            replica_acks=acks,
            executor=executor,
        )

    # -- plumbing ----------------------------------------------------------------------------------

    def describe(self) -> str:
        return self._description

    @property
    def replica_acks(self) -> int:
        """Replicas that must acknowledge a write before anything relies on it (``WAIT``)."""
        return self._acks

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """redis-py errors → StoreUnavailable (transient) or StoreError, one line, no URL."""
        where = f"Redis store {self._description}"
        try:
            yield
        except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise StoreError(f"{where}: {_one_line(exc)}") from exc
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            raise StoreUnavailable(f"{where} is unavailable: {_one_line(exc)}") from exc
        except redis.ResponseError as exc:
            text = _one_line(exc)
            if text.startswith(_TRANSIENT_REPLIES) or "non local key" in text:
                raise StoreUnavailable(f"{where} is unavailable: {text}") from exc
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith(
                _STORAGE_REPLIES
            ):
                raise StoreDiskError(f"{where} cannot write: {text}") from exc
            raise StoreError(f"{where}: {text}") from exc
        except redis.RedisError as exc:  # protocol errors (not Redis at all), data errors, …
            if "cluster" in type(exc).__name__.lower():
                raise StoreUnavailable(f"{where} is unavailable: {_one_line(exc)}") from exc
            raise StoreError(f"{where}: {_one_line(exc)}") from exc

    def _call(self, name: str, keys: Sequence[str], *args: str | int, strict: bool = False) -> Any:
        return self._pipelined([(name, keys, args)], strict=strict)[0]

    def _pipelined(
        self,
        calls: Sequence[tuple[str, Sequence[str], Sequence[str | int]]],
        *,
        strict: bool = False,
        wait: bool = False,
    ) -> list[Any]:
        """Run scripts in one round trip (EVALSHA; scripts the server lost are loaded, re-run).

        Each reply is unwrapped from the generation prologue's (see _generation.lua) and the
        generation recorded. ``strict``: a leader write, refused with :class:`RolledBack` if the
        store went back since this store object last looked. ``wait``: with replica_acks > 0,
        a ``WAIT`` follows in the same pipeline, and :class:`NotAcknowledged` is raised if too few
        replicas acknowledged (the scripts ran: what they did is on the primary only).
        """
        replies, acked = self._acknowledged(calls, strict=strict, wait=wait)
        if not acked:
            raise self._not_acknowledged()
        return replies

    def _acknowledged(
        self,
        calls: Sequence[tuple[str, Sequence[str], Sequence[str | int]]],
        *,
        strict: bool = False,
        wait: bool = False,
    ) -> tuple[list[Any], bool]:
        """:meth:`_pipelined` without raising NotAcknowledged: the replies and whether enough
        replicas acknowledged them (always True without ``wait`` or replica_acks)."""
        if self._closed.is_set():
            raise StoreError(f"Redis store {self._description} is closed")
        waiting = wait and self._acks > 0
        with self._translated():
            results = self._execute(calls, strict, waiting)
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:
                names = {calls[i][0] for i in missing}
                self._exec.run([_load(self._scripts[name]) for name in names])
                # The NOSCRIPT calls did nothing: running them now is their first run.
                again = self._execute([calls[i] for i in missing], strict, waiting)
                for i, result in zip(missing, again, strict=False):
                    results[i] = result
                if waiting:
                    results[-1] = again[-1]
            for result in results:
                if isinstance(result, Exception):
                    raise result
        acked = True
        if waiting:
            acked = int(results.pop()) >= self._acks
        # A generation is durable once acknowledged; without replica_acks, once answered.
        durable = acked if waiting else self._acks == 0
        replies = [self._observe(reply, durable=durable) for reply in results]
        if any(reply == ["rolledback"] for reply in replies):
            raise RolledBack(
                f"Redis store {self._description} went back to an older state "
                f"({self._gen.describe()}); the leader loads its state again"
            )
        return replies, acked

    def _not_acknowledged(self) -> NotAcknowledged:
        return NotAcknowledged(
            f"Redis store {self._description}: fewer than {self._acks} replica(s) acknowledged "
            f"within {ACK_TIMEOUT_MS} ms (replica_acks = {self._acks}; 0 if the primary has "
            "no replica)"
        )

    def _publish_pending(self) -> None:
        """Queue every held run (publish.lua). Called after an acknowledged dispatch, and at every
        leader load (runs a previous leader held, or held under a replica_acks since lowered)."""
        while self._call("publish", [self._keys.pending], PUBLISH_BATCH):
            pass

    def _execute(
        self,
        calls: Sequence[tuple[str, Sequence[str], Sequence[str | int]]],
        strict: bool,
        waiting: bool,
    ) -> list[Any]:
        gen = self._gen.presented(strict)
        trailer_keys = (self._keys.gen, self._keys.canary)
        ops: list[Op] = []
        for name, keys, args in calls:
            write = "0" if name in READ_ONLY else "1"
            ops.append(
                _evalsha(
                    self._shas[name],
                    [*keys, *trailer_keys],
                    [self._keys.prefix, *args, *gen, write],
                )
            )
        if waiting:
            ops.append(lambda pipe: pipe.execute_command("WAIT", self._acks, ACK_TIMEOUT_MS))
        return self._exec.run(ops)

    def _observe(self, reply: Any, *, durable: bool) -> Any:
        info, payload = reply
        rolled = self._gen.saw(info, durable=durable)
        if rolled:
            log.warning(
                "Redis store %s went back to an older state (%s): runs created before it are "
                "never started again and slots of the lost window are recorded 'uncertain'",
                self._description,
                self._gen.describe(),
            )
        return payload

    def _single(self, op: Op) -> Any:
        """One plain command (not a script) on the primary."""
        if self._closed.is_set():
            raise StoreError(f"Redis store {self._description} is closed")
        with self._translated():
            result = self._exec.run([op])[0]
            if isinstance(result, Exception):
                raise result
            return result

    def _time_us(self) -> int:
        seconds, micros = self._single(lambda pipe: pipe.time())
        return int(seconds) * 1_000_000 + int(micros)

    def close(self) -> None:
        self._closed.set()
        self._exec.close()

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
            _us(ttl),
            self._gen.epoch_floor,
        )
        if reply[0] != "ok":
            self._gen.saw_epoch(_int(reply[1]))
            return None
        _, epoch, holder, expires = reply
        self._gen.saw_epoch(_int(epoch))
        return Lease(
            token=token, epoch=_int(epoch), node=holder, expires_at=from_micros(_int(expires))
        )

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease | None:
        reply = self._call("renew", [self._keys.lease], lease.token, lease.epoch, _us(ttl))
        if reply[0] != "ok":
            return None
        return Lease(
            token=lease.token,
            epoch=lease.epoch,
            node=lease.node,
            expires_at=from_micros(_int(reply[1])),
        )

    def release_lease(self, lease: Lease) -> None:
        self._call("release", [self._keys.lease], lease.token, lease.epoch)

    def leader(self) -> LeaderInfo | None:
        reply = self._call("leader", [self._keys.lease])
        if not reply:
            return None
        node, epoch, expires = reply
        try:
            return LeaderInfo(node=node, epoch=_int(epoch), expires_at=from_micros(_int(expires)))
        except (ValueError, OverflowError):  # a forged lease proves no leader
            return None

    def _fenced(self, lease: Lease, reply: Sequence[Any] = ()) -> Fenced:
        found = (reply[1], reply[2]) if len(reply) >= 3 else (None, None)
        return Fenced(_refusal(lease, *found))

    # -- job state ---------------------------------------------------------------------------------

    def sync_jobs(
        self, lease: Lease, jobs: Sequence[JobSync], loaded_at: datetime
    ) -> list[JobState]:
        flat: list[str] = []
        dues: dict[datetime | None, str] = {None: ""}  # jobs share few distinct next slots
        for job in jobs:
            due = dues.get(job.next_due)
            if due is None:
                assert job.next_due is not None
                due = dues[job.next_due] = str(to_micros(job.next_due))
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
            _job_state_of(name, active, fields) for name, active, fields in json.loads(reply[1])
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
        states = (_job_state(reply) for reply in self._call("read_jobs", [self._keys.jobs]))
        return {state.name: state for state in sorted(states, key=lambda s: s.name)}

    def set_paused(self, job: str, paused: bool) -> JobState:
        reply = self._call(
            "set_paused", [self._keys.job(job), self._keys.jobs], job, "1" if paused else "0"
        )
        return _job_state(reply)

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        """Chunks of items, one script call each, all pipelined: one round trip for the batch."""
        encoder = _DispatchEncoder()
        calls: list[tuple[str, Sequence[str], Sequence[str | int]]] = []
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
        for reply in replies:
            if reply[0] == "fenced":
                # This chunk's items and all later ones were refused (a lease never revives).
                raise self._fenced(lease, reply)
            _, at, statuses, earlier = reply
            decided_at = from_micros(_int(at))
            firsts = iter(earlier.split())
            for text in statuses.split():
                status = _DISPATCH_STATUS[text]
                run_id = run_ids[len(results)]
                if status is DispatchStatus.DUPLICATE:
                    first = from_micros(_int(next(firsts)))  # when the first decision was made
                    results.append(
                        DispatchResult(status=status, run_id=run_id, dispatched_at=first)
                    )
                else:
                    results.append(
                        DispatchResult(
                            status=status,
                            run_id=run_id if status in _NAMED else None,
                            dispatched_at=decided_at,
                        )
                    )
        return results

    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        """One advance.lua call per item, all pipelined: one round trip for the batch."""
        calls: list[tuple[str, Sequence[str], Sequence[str | int]]] = []
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
            states.append(_job_state(reply[1]))
        return states

    # -- manual runs -------------------------------------------------------------------------------

    def enqueue_manual(
        self, job: str, queue: str, digest: str, overlap: Overlap, max_attempts: int
    ) -> RunRecord:
        nonce = secrets.token_hex(8)
        while True:
            at = self._time_us()
            run_id = f"{job}@{format_utc(from_micros(at))}~manual"
            args: list[str | int] = [job, queue, digest, overlap, max_attempts, run_id, at, nonce]
            call = ("enqueue_manual", [self._keys.manual_guard(job, at)], args)
            reply = self._pipelined([call], wait=True)[0]
            if reply[0] == "ok":
                return _record(_pairs(reply[1]), ended=False)
            if reply[0] == "repeat":
                record = _found_run(reply[1])
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
            claim_args: list[str | int] = [token, worker, _us(ttl), len(names), *names]
            claim_args += [" ".join(tickets.get(name, ())) for name in names]
            claim_args.append(self._history)
            (_, (now_us, wake), reply), acked = self._acknowledged(
                [
                    ("reap", [leases], [self._history, REAP_BATCH]),
                    ("promote", promote_keys, [ABANDONED_TICKET_MS, CONSUMER_IDLE_MS, *names]),
                    ("claim", claim_keys, claim_args),
                ],
                wait=True,
            )
            for run_id in reply[-1]:
                log.warning(
                    "run %s ended 'uncertain' instead of being claimed: it was created before "
                    "the store went back to an older state",
                    run_id,
                )
            if reply[0] != "claim":
                return None, _int(now_us), _int(wake) if wake else None
            fields = _pairs(reply[1])
            try:
                claimed = _claim(fields)
            except MalformedRecord as exc:
                self._quarantine(fields, token, str(exc))
                # That token is spent on the quarantined attempt (claim.lua would answer 'none'
                # for it): the next pass, at once, takes the next ready run with a token of its
                # own.
                token, tickets = f"{token}.q", {}
                continue
            if not acked:
                # Nothing may run on a claim a failover could take back: return the run (if this
                # hand-back is lost too, the attempt lease expires and the run is reclaimed).
                with contextlib.suppress(StoreError):
                    self.hand_back(claimed.run.run_id, claimed.token)
                raise self._not_acknowledged()
            return claimed, _int(now_us), None

    def _quarantine(self, fields: Fields, token: str, problem: str) -> None:
        """End a malformed run this claim started as ``quarantined``, through finish.lua (see
        chronod.store.base); it is reported by drain_quarantined."""
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
        return bool(self._call("heartbeat", keys, run_id, token, _us(ttl)))

    def finish(self, run_id: str, token: str, result: AttemptResult) -> FinishStatus:
        extra: dict[str, str] = {"output": _output_tail(result.output)}
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
        keys = [self._keys.run(run_id), self._keys.token(token)]
        return bool(self._call("hand_back", keys, run_id, token))

    def reap(self) -> list[str]:
        reaped: list[str] = []
        while True:
            batch = self._call("reap", [self._keys.leases], self._history, REAP_BATCH)
            reaped.extend(str(run_id) for run_id in batch)
            if len(batch) < REAP_BATCH:
                return reaped

    def register_worker(self, info: WorkerInfo) -> None:
        # seen_at is store time: the caller's clock is never trusted for liveness.
        details = {
            "queues": list(info.queues),
            "running": info.running,
            "concurrency": info.concurrency,
        }
        self._call(
            "register_worker",
            [self._keys.workers, self._keys.workers_seen],
            info.worker,
            json.dumps(details),
            _us(WORKER_WINDOW),
        )

    def workers(self) -> list[WorkerInfo]:
        reply = self._call(
            "workers", [self._keys.workers, self._keys.workers_seen], _us(WORKER_WINDOW)
        )
        found: list[WorkerInfo] = []
        for i in range(0, len(reply), 3):
            try:
                details = json.loads(reply[i + 2])
                found.append(
                    WorkerInfo(
                        worker=str(reply[i]),
                        queues=tuple(str(queue) for queue in details["queues"]),
                        seen_at=from_micros(_int(reply[i + 1])),
                        running=int(details["running"]),
                        concurrency=int(details["concurrency"]),
                    )
                )
            except (ValueError, TypeError, KeyError, OverflowError):
                continue  # a forged entry; real ones are rewritten every few seconds
        return found

    # -- presence ----------------------------------------------------------------------------------

    def announce(self, member: str, role: Role, *, stopped: bool = False) -> None:
        # seen_at is store time, like a worker's registration.
        self._call(
            "announce",
            [self._keys.presence, self._keys.presence_seen],
            member,
            json.dumps({"role": role, "stopped": stopped}),
            _us(WORKER_WINDOW),
        )

    def presences(self) -> list[Presence]:
        reply = self._call(
            "presences", [self._keys.presence, self._keys.presence_seen], _us(WORKER_WINDOW)
        )
        found: list[Presence] = []
        for i in range(0, len(reply), 3):
            details = json.loads(reply[i + 2])
            found.append(
                Presence(
                    member=reply[i],
                    role="worker" if details["role"] == "worker" else "scheduler",
                    seen_at=from_micros(_int(reply[i + 1])),
                    stopped=bool(details["stopped"]),
                )
            )
        return found

    # -- reading -----------------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord | None:
        job = _job_of(run_id)
        keys = [self._keys.run(run_id), self._keys.history(job)]
        return _found_run(self._call("read_run", keys, run_id, job))

    def live_runs(self, job: str | None = None) -> list[RunRecord]:
        key = self._keys.live if job is None else self._keys.live_of(job)
        return [_readable(_pairs(flat), ended=False) for flat in self._call("live_runs", [key])]

    def history(self, job: str, limit: int) -> list[RunRecord]:
        if limit <= 0:
            return []
        key = self._keys.history(job)
        entries = self._single(lambda pipe: pipe.lrange(key, 0, limit - 1))
        return [_readable_entry(entry) for entry in entries]

    def queue_depths(self) -> dict[str, int]:
        reply = self._call("queue_depths", [self._keys.queues])
        return {str(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}
