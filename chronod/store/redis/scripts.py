"""Running the Redis store's Lua scripts: loading them, sending them (pipelined, with the
generation every process presents, and ``WAIT`` where writes must reach replicas), and Redis's
errors as chronod's.

Every read-check-write is one script in ``chronod/store/lua``; the logic, and why each step is
safe to repeat, is in the scripts' header comments. Each script is sent as ``_common.lua``, the
generation prologue (``_generation.lua``), then its own code as the function the prologue runs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

from chronod.errors import StoreDiskError, StoreError, StoreUnavailable
from chronod.instants import format_utc, from_micros
from chronod.store.base import MAX_OUTBOX, NotAcknowledged, RolledBack
from chronod.store.keys import KeySpace
from chronod.store.redis.codec import as_int
from chronod.store.redis.connection import Executor, Op

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
    "mark_seen",
    "seen",
    "publish",
    "set_event_kinds",
    "set_chains",
    "events_due",
    "settle_event",
    "outbox_stats",
    "note_delivery",
    "begin_external",
    "end_external",
)
# Scripts that write nothing of their own (the generation prologue may still record a rollback).
READ_ONLY = frozenset(
    {"leader", "read_jobs", "read_run", "live_runs", "queue_depths", "seen", "events_due"}
    | {"outbox_stats"}
)

# How long a write waits for its replica acknowledgements (WAIT) before it is treated as not
# durable: well below the lease (the leader stops dispatching) and the attempt lease.
ACK_TIMEOUT_MS = 500
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
# The server answers but cannot take writes: full (maxmemory with noeviction; redis-py raises
# OutOfMemoryError without the OOM prefix) or unable to persist (stop-writes-on-bgsave-error).
# Like a full disk under SQLite: retried, reported, never fatal.
_STORAGE_REPLIES = ("OOM", "MISCONF")

Call = tuple[str, Sequence[str], Sequence[str | int]]  # a script's name, keys and arguments


def load_script_sources() -> dict[str, str]:
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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
        n, rollbacks = as_int(info[0]), str(info[1])
        with self._lock:
            if durable and n > self.seen:
                self.seen = n
                if len(info) > 5 and info[5]:
                    self.seen_at = max(self.seen_at, as_int(info[5]))
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
            f"acknowledged, detected at {format_utc(from_micros(as_int(last[2])))}"
        )


class ScriptRunner:
    """Sends the scripts of a :class:`~chronod.store.redis.RedisStore` (its base class) through an
    :class:`~chronod.store.redis.connection.Executor`."""

    # Store.outbox_limit, sent with every script (_generation.lua sets OUTBOX_LIMIT from it).
    outbox_limit: int = MAX_OUTBOX

    def __init__(
        self, executor: Executor, keys: KeySpace, *, description: str, replica_acks: int
    ) -> None:
        self._exec = executor
        self._keys = keys
        self._description = description
        self._acks = max(int(replica_acks), 0)
        self._scripts = load_script_sources()
        self._shas = {name: _sha1(source) for name, source in self._scripts.items()}
        self._closed = threading.Event()  # also ends a claim() waiting in another thread
        self._gen = _Generation()

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
        calls: Sequence[Call],
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
        calls: Sequence[Call],
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

    def _execute(
        self,
        calls: Sequence[Call],
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
                    [self._keys.prefix, *args, self.outbox_limit, *gen, write],
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
