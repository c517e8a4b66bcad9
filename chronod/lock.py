"""The leader lease loop: acquire, renew about every third of the TTL, step down, release.

Fencing and why every leader write checks the lease itself: docs/design.md §5.

A :class:`LeaseKeeper` runs in a thread of its own with a store connection of its own. The scheduler
asks :meth:`LeaseKeeper.current` before every batch of writes; it answers with the lease only while
the lease is *provably* valid: the validity window is counted on the monotonic clock from the moment
the acquire/renew request was **sent** (the store may have started the TTL any time after that), so
a slow reply, a stalled process or a store outage all shrink it, never stretch it.

This local check only keeps an ex-leader from trying. What makes it safe is fencing in the store: a
write carrying an old token or epoch is refused there, whatever this process's clock believes.

Store errors never end the thread: it logs the first failure of a run of them (the rest at debug
level), reports each outcome through ``on_store`` (the process's store health: a failing write is
what a full disk looks like from here), and keeps trying. Anything else is a bug: the thread logs
one line naming it and ends, and :attr:`LeaseKeeper.failure` says why, so the daemon can exit and
be restarted rather than live on without a lease keeper.
"""

from __future__ import annotations

import logging
import secrets
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta

from chronod.clock import Clock
from chronod.errors import StoreError
from chronod.store.base import Lease, Store
from chronod.telemetry import Episode

log = logging.getLogger("chronod.lease")

# Fraction of the TTL kept as a safety margin before the lease is treated as lost locally.
SAFETY = 0.1
# A standby looks for a free lease at least this often (seconds): after a leader's SIGTERM release
# takes effect at once, failover waits at most this long.
STANDBY_POLL = 1.0


class LeaseKeeper:
    """Holds the leader lease, or waits for it, from a background thread.

    ``on_change`` is called (from the keeper thread) whenever leadership is gained or lost (and
    when the thread fails); the daemon uses it to wake its main loop. ``on_store`` is called after
    each store request: with None after one that shows writes work (a renewal, an answered
    acquisition attempt: see :meth:`_try_acquire`), with the error after one that failed.
    """

    def __init__(
        self,
        store: Store,
        *,
        node: str,
        ttl: timedelta,
        clock: Clock,
        on_change: Callable[[Lease | None], None] = lambda _: None,
        on_store: Callable[[StoreError | None], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.node = node
        self.ttl = ttl
        self.clock = clock
        self.on_change = on_change
        self.on_store = on_store
        self.renew_every = ttl.total_seconds() / 3
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._valid_until = 0.0  # monotonic seconds
        self._renewed_at = 0.0  # monotonic instant the last successful acquire/renew was sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Renewals run in the keeper thread and in the daemon's (renew_if_due): counted under
        # the lock, like everything both threads change.
        self._renew_failures = 0
        self.failure: str | None = None  # why the thread ended on an unexpected error
        self._failures = Episode(clock.monotonic)  # only the first error of a run is logged

    # -- queried by the scheduler ------------------------------------------------------------------

    def current(self) -> Lease | None:
        """The lease, if it is provably still ours right now; None otherwise."""
        with self._lock:
            if self._lease is not None and self.clock.monotonic() < self._valid_until:
                return self._lease
            return None

    @property
    def renew_failures(self) -> int:
        """Renewals that failed or were refused since the keeper was made (for metrics)."""
        with self._lock:
            return self._renew_failures

    def seconds_left(self) -> float:
        with self._lock:
            return max(self._valid_until - self.clock.monotonic(), 0.0) if self._lease else 0.0

    def renew_if_due(self) -> None:
        """Renew now, from the calling thread, if a renewal is due (none for ``renew_every``).

        The daemon calls this between the store calls of a long tick: on SQLite its own write
        transactions hold the database lock the keeper thread's renewal waits for, and a renewal
        that waits past the lease's expiry is refused (the leader loses its own lease). Safe to run
        alongside the keeper thread: a renewal repeated is harmless.
        """
        with self._lock:
            lease, renewed_at = self._lease, self._renewed_at
        sent = self.clock.monotonic()
        if lease is not None and sent - renewed_at >= self.renew_every:
            self._try_renew(lease, sent)

    def fenced(self, lease: Lease, reason: str = "") -> None:
        """The store refused ``lease`` (another leader took over, or the store lost our lease):
        step down at once. ``reason``: the refusal as the store worded it."""
        self._drop(lease, f"fenced by the store: {reason or self._refused_because(lease)}")

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chronod-lease", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """False once the thread ended without being asked to (see :attr:`failure`)."""
        thread = self._thread
        return thread is None or thread.is_alive() or self._stop.is_set()

    def stop(self, *, release: bool = True) -> None:
        """Stop the thread; with ``release`` give the lease up so a standby takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl.total_seconds() + 5)
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None and release:
            try:
                self.store.release_lease(lease)
                log.info("lease released (epoch %d)", lease.epoch)
            except StoreError as exc:
                log.warning("could not release the lease (it will expire): %s", exc)
        if lease is not None:
            self.on_change(None)

    def step(self) -> float:
        """One acquire-or-renew attempt; returns seconds until the next one. (The thread's body.)"""
        with self._lock:
            lease = self._lease
        sent = self.clock.monotonic()
        if lease is None:
            return self._try_acquire(sent)
        return self._try_renew(lease, sent)

    # -- internals --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                delay = self.step()
                self.clock.wait(self._stop, delay)
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            self.failure = (
                f"{type(exc).__name__}: {exc} (at {frame.filename}:{frame.lineno}, in {frame.name})"
            )
            log.error("the lease keeper thread stopped on an unexpected error: %s", self.failure)
            self.on_change(None)

    def _store_failed(self, exc: StoreError, message: str) -> None:
        """Log the first store error of a run of them (WARNING), the others at DEBUG."""
        level = logging.WARNING if self._failures.failed() else logging.DEBUG
        log.log(level, "%s: %s", message, exc)
        self.on_store(exc)

    def _store_answered(self, *, wrote: bool) -> None:
        if self._failures.succeeded() is not None:
            log.info("the store answers the lease keeper again")
        if wrote:
            self.on_store(None)

    def _try_acquire(self, sent: float) -> float:
        try:
            lease = self.store.acquire_lease(self.node, secrets.token_hex(16), self.ttl)
        except StoreError as exc:
            self._store_failed(exc, "the store failed while looking for the lease")
            return STANDBY_POLL
        # An answer is a write even when someone else holds the lease: this node only tries to
        # write when the lease has expired, so a lease held after a failure here was written
        # (acquired or renewed) since. That is how a standby learns that writes work again.
        self._store_answered(wrote=True)
        if lease is None:
            return min(STANDBY_POLL, self.renew_every)
        with self._lock:
            self._lease = lease
            self._valid_until = sent + self.ttl.total_seconds() * (1 - SAFETY)
            self._renewed_at = sent
        log.info("became leader (epoch %d, node %s)", lease.epoch, lease.node)
        self.on_change(lease)
        return self.renew_every

    def _try_renew(self, lease: Lease, sent: float) -> float:
        try:
            renewed = self.store.renew_lease(lease, self.ttl)
        except StoreError as exc:
            # Keep the token: if the store comes back before the lease expires, renewing resumes
            # leadership without a new epoch. Until then current() stops answering (validity runs
            # out), so nothing is dispatched while leadership cannot be proven.
            with self._lock:
                self._renew_failures += 1
                expired = self.clock.monotonic() >= self._valid_until
            self._store_failed(exc, "lease renewal failed, not dispatching until it succeeds")
            if expired:
                self._drop(lease, "lease could have expired while the store was failing")
                return STANDBY_POLL
            return min(STANDBY_POLL, self.renew_every)
        self._store_answered(wrote=renewed is not None)
        if renewed is None:
            with self._lock:
                self._renew_failures += 1
            self._drop(lease, f"lease renewal refused: {self._refused_because(lease)}")
            return min(STANDBY_POLL, self.renew_every)
        with self._lock:
            if self._lease is not None and self._lease.token == renewed.token:
                self._lease = renewed
                # max: the daemon thread may renew too (renew_if_due); a reply to an older
                # request arriving last must not shorten the validity the newer one proved.
                self._valid_until = max(
                    self._valid_until, sent + self.ttl.total_seconds() * (1 - SAFETY)
                )
                self._renewed_at = max(self._renewed_at, sent)
        return self.renew_every

    def _refused_because(self, lease: Lease) -> str:
        """What the store holds instead of ``lease``, in words (one more read; the log must say
        what happened: a newer leader, an expiry, or a store that went back and lost it)."""
        try:
            holder = self.store.leader()
        except StoreError as exc:
            return f"it expired or another node holds it (the store could not say: {exc})"
        if holder is None:
            return "the store holds no lease (it expired, or the store lost it)"
        if holder.epoch < lease.epoch:
            return (
                f"the store holds epoch {holder.epoch} of {holder.node}, older than ours: "
                "the store went back to an older state"
            )
        if holder.epoch == lease.epoch:
            return "it expired"
        return f"another leader holds a newer epoch ({holder.epoch}, {holder.node})"

    def _drop(self, lease: Lease, reason: str) -> None:
        with self._lock:
            if self._lease is None or self._lease.token != lease.token:
                return
            self._lease = None
            self._valid_until = 0.0
        log.warning("stepped down (epoch %d): %s", lease.epoch, reason)
        self.on_change(None)
