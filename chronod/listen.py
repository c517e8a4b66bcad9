"""Where chronod's two HTTP servers listen, and the one server they both run.

``chronod web --bind`` and ``--metrics`` (of ``run`` and ``worker``) share the address grammar
(:func:`parse_address`), the one-line reason a bind failed (:func:`listen_error`) and a threaded
HTTP server that can be stopped (:class:`HTTPListener`); :mod:`chronod.web.server` and
:mod:`chronod.metrics` only differ in what their request handlers answer.
"""

from __future__ import annotations

import errno
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from chronod.errors import ChronodError

# ``[v6]:PORT``, or a host without colons or brackets (possibly empty) and a port.
_ADDRESS = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})")
# serve_forever's poll: how often an idle server wakes. Kept long (an idle daemon should not wake
# often); stop() does not wait for it, see HTTPListener.stop.
POLL_INTERVAL = 0.5
STOP_TIMEOUT = 10.0  # seconds stop() waits for the serving thread

# What the server calls per connection: a handler class, or a functools.partial of one that passes
# it what it serves (as http.server's own ``partial(SimpleHTTPRequestHandler, directory=...)``).
HandlerFactory = Callable[[Any, Any, "_Server"], socketserver.BaseRequestHandler]


class ListenError(ChronodError):
    """A server cannot listen where it was asked to (exit 1: the command line itself was fine)."""


def parse_address(text: str, *, any_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``; port 0 picks a free port.

    ``:PORT`` (no host) means ``any_host`` where the caller gives one, and is refused otherwise.
    An IPv6 address needs its brackets (``::1:80`` is ambiguous). Raises ValueError saying what
    is wrong.
    """
    match = _ADDRESS.fullmatch(text)
    host = None if match is None else (match["v6"] or match["host"] or any_host)
    if match is None or host is None:
        forms = "HOST:PORT, [IPv6]:PORT or :PORT" if any_host else "HOST:PORT or [IPv6]:PORT"
        raise ValueError(f"expected {forms}, got {text!r}")
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(exc: BaseException) -> str:
    """The reason ``exc`` (raised while binding a listening socket) gives, for a user."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "address already in use (another chronod, or another program, listens there)"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this host"
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot listen there: {exc.strerror}"
    return f"cannot listen there: {exc}"


class _Server(ThreadingHTTPServer):
    # A slow or stuck client never holds up the process's exit. The listening socket is not
    # inheritable (PEP 446): the processes chronod starts (worker children, the fork server, job
    # commands) are all exec'd, so none of them keeps the port after its parent is gone.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: HandlerFactory) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a broken resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class HTTPListener:
    """An HTTP server answering from a daemon thread, a thread per connection, until stopped."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @classmethod
    def start(
        cls,
        address: tuple[str, int],
        handler: HandlerFactory,
        *,
        option: str,
        error: type[ChronodError] = ListenError,
        thread_name: str = "chronod-http",
    ) -> HTTPListener:
        """Listen on ``address`` and serve; a bind that fails raises ``error`` with one line
        naming the ``option`` the address came from (``--bind HOST:PORT: address already in use
        …``)."""
        try:
            server = _Server(address, handler)
        except (OSError, OverflowError) as exc:
            where = format_address(*address)
            raise error(f"{option} {where}: {listen_error(exc)}") from None
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=thread_name,
            daemon=True,
        )
        thread.start()
        return cls(server, thread)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when 0 was asked for)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread (idempotent)."""
        if self._server.socket.fileno() == -1:
            return
        # serve_forever notices shutdown() only between polls; a connection wakes the poll now,
        # so stopping takes milliseconds instead of up to POLL_INTERVAL.
        stopper = threading.Thread(target=self._server.shutdown, name="chronod-http-stop")
        stopper.start()
        while stopper.is_alive():
            self._poke()
            stopper.join(timeout=0.05)
        self._server.server_close()
        self._thread.join(timeout=STOP_TIMEOUT)

    def _poke(self) -> None:
        try:
            with socket.create_connection(self.address, timeout=1):
                pass
        except OSError:
            pass  # already closed, or the listen queue is full: the poll still ends it
