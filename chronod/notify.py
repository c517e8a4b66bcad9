"""systemd ``sd_notify`` without a dependency: datagrams to ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon calls these freely.

What chronod sends, and when (both ``chronod run`` and the ``chronod worker`` supervisor)
    ``READY=1``
        once the config is loaded and the store has answered once (a unit whose store stays down
        fails its start after ``TimeoutStartSec`` and is restarted by ``Restart=``), and again
        after every reload, with the current ``STATUS=``.
    ``STATUS=…``
        whenever the one-line summary changes: the role (leader with its epoch, or standby and who
        leads), the number of jobs, the queue depth, or the store outage.
    ``WATCHDOG=1``
        from the main loop, at least every half ``WatchdogSec``, only while the process is healthy
        (:mod:`chronod.telemetry` defines it; a store outage is not unhealthy).
    ``RELOADING=1`` … ``READY=1``
        around a SIGHUP reload, with ``MONOTONIC_USEC`` as ``Type=notify-reload`` requires.
    ``STOPPING=1``
        as soon as a stop is requested, before the lease is released and the pool drains.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        # An '@' prefix means an abstract-namespace socket (a leading NUL byte).
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        self.watchdog_usec = _watchdog_usec()
        self._status: str | None = None  # last STATUS sent: an unchanged one is not sent again

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        payload = "\n".join(lines).encode()
        # Never blocks: a datagram socket whose reader is behind (its queue holds only
        # net.unix.max_dgram_qlen messages) would otherwise stall the main loop, which is the
        # scheduler. A dropped ping is repeated half a WatchdogSec later; if systemd went away
        # there is nothing useful to do about it either: the error is suppressed.
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        ):
            sock.setblocking(False)
            sock.sendto(payload, self.address)

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` if it differs from the last one sent."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={_one_line(status)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._status = "stopping"
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WatchdogSec), or None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None


def _watchdog_usec() -> int:
    """``$WATCHDOG_USEC`` if the watchdog is meant for this process (``$WATCHDOG_PID``), else 0."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return 0
    try:
        return max(int(os.environ.get("WATCHDOG_USEC", "0") or 0), 0)
    except ValueError:
        return 0


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))
