"""``chronod web``: one page to watch and steer the schedule, and the JSON API it is built on.

Serve it with ``chronod web [--bind 127.0.0.1:8750]`` (or from a daemon: :func:`start_web`). It
reads the same store, through the same code (:mod:`chronod.ops`), as ``chronod status`` and
``chronod history``; the config file is re-read when it changes (an invalid edit keeps the last
good config, and ``config_stale`` says so).

Pages
-----
``GET /``
    Cluster panel (leader, lease, workers, queues), timeline of the next 24 h (zoom to 7 days,
    job zone or UTC) with past runs on the same axis, and the jobs table.
``GET /jobs/NAME``
    One job: schedule, next fires, history with output tails, actions.
``GET /static/app.js``, ``GET /static/style.css``
    The page's script and style sheet (shipped in the package; no build step, no CDN).

JSON API (``/api/v1/``)
-----------------------
Instants are ISO 8601 UTC (``2026-11-27T14:30:00Z``) unless a field says ``local`` (the job's zone,
with its offset). Answers are never cached (``Cache-Control: no-store``). Errors are
``{"error": "one line", "status": N}`` with that HTTP status: 400 bad parameter, 403 action refused,
404 unknown job or route, 405 wrong method, 411/413 missing or oversized body, 415 body not JSON,
503 store unreachable.

``GET /api/v1/status``
    ``chronod status --json``: ``{"now", "store", "leader", "workers", "queues", "jobs"}``
    (shapes in :mod:`chronod.ops`), plus ``actions_enabled`` (a token is configured),
    ``config_stale`` (the file changed but is invalid; the last good config is in use) and
    ``version``.
``GET /api/v1/jobs``
    ``{"now", "jobs": [...]}``: each job as in ``status`` plus ``description``, ``stats``
    (``{"runs", "ran", "succeeded", "success_rate", "outcomes"}`` over the kept history, each run
    counted once by its final outcome; skipped and missed slots are not in ``ran``) and
    ``last_run`` (the newest history entry, without its output).
``GET /api/v1/jobs/NAME``
    One job as in ``jobs``, plus ``upcoming``: its next 5 fires, as ``chronod next --json``.
``GET /api/v1/jobs/NAME/history?limit=50``
    ``{"job", "now", "timezone", "live", "runs"}``: live runs (oldest first) and the newest
    ``limit`` (1-1000) history entries, each a run object (``chronod history --json``) plus
    ``slot_local`` and ``finished_local`` (the job's zone).
``GET /api/v1/timeline?hours=24&past=6&zone=job&at=ISO``
    Every configured job over ``[at - past h, at + hours h]`` (``hours`` 1-168, default 24;
    ``past`` 0-168, default hours/4; ``at`` default: store time now, an ISO 8601 instant with
    offset): ``{"now", "at", "start", "end", "zone", "jobs": [{"job", "timezone", "schedule",
    "paused", "fires", "more_fires", "skipped_days", "offsets", "runs"}]}``. ``fires`` (at most
    500; ``more_fires`` when the window holds more): ``{"utc", "local", "at", "note"}`` where ``at``
    is in the chosen ``zone`` (``job`` or ``utc``) and ``note`` names a DST shift or skipped solar
    days. ``skipped_days``: ``{"first", "last", "start", "end", "note"}`` local dates without the
    solar event. ``offsets``: ``{"start", "end", "offset_s", "abbreviation"}``, the chosen zone's
    UTC offset over the window. ``runs``: run objects without ``output``.

Actions (``POST``, body ``{}`` as ``application/json``)
-------------------------------------------------------
Off unless a token is configured: ``[chronod] web_token``, or ``CHRONOD_WEB_TOKEN`` (which wins).
Every action request must carry ``Authorization: Bearer TOKEN`` (compared in constant time); without
a configured token, without the header or with a wrong token the answer is 403 and nothing happens.

``POST /api/v1/jobs/NAME/trigger``
    ``chronod trigger``: one manual run now, through the job's queue. 202 ``{"action", "run"}``.
``POST /api/v1/jobs/NAME/pause``, ``POST /api/v1/jobs/NAME/resume``
    ``chronod pause`` / ``resume``. 200 ``{"action", "job", "paused", "changed", "watermark"}``.
``POST /api/v1/auth``
    Checks a token without doing anything: 200 ``{"ok": true}`` or 403.

Safety
------
Bound to loopback by default; on a loopback bind, requests naming another ``Host`` are refused
(403), so a web page elsewhere cannot read the API through DNS rebinding. No answer contains a
secret: the store is shown as :meth:`~chronod.store.base.Store.describe` (password redacted), job
``env`` values and the token never appear. Every response carries a Content-Security-Policy
without inline script or style, ``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY``.
Request bodies are limited to 16 KiB. Each request opens its own store and closes it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import signal
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chronod._proc import Waker
from chronod.clock import Clock, SystemClock
from chronod.config import Config
from chronod.errors import UsageError
from chronod.listen import HTTPListener, ListenError, format_address, parse_address
from chronod.logs import event
from chronod.runtime import store_settings
from chronod.store import open_store
from chronod.store.base import Store
from chronod.web.app import (
    MAX_BODY,
    ConfigSource,
    Request,
    Response,
    WebApp,
    env_token,
    error_response,
)

log = logging.getLogger("chronod.web")

DEFAULT_BIND = "127.0.0.1:8750"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
# Seconds a client may take to send its request: a stalled connection frees its thread.
REQUEST_TIMEOUT = 30.0
DISCARD_LIMIT = 1024 * 1024  # an oversized body is read (and dropped) up to this, see _read_body
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then an optional port.
_HOST_HEADER = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]/@\s]+))(?::\d{1,5})?")


class BindError(ListenError):
    """The page cannot be served on the address asked for (exit 1: the command line was fine)."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def host_allowed(self, host_header: str | None) -> bool:
        """On a loopback bind only loopback names may be asked for (DNS-rebinding guard).

        The whole header must be a host and an optional port: ``[::1]evil.example`` names no
        loopback address, whatever it starts with.
        """
        if not self.loopback or host_header is None:
            return True
        match = _HOST_HEADER.fullmatch(host_header.strip())
        if match is None:
            return False
        host = match["v6"] or match["name"]
        return host.lower() in (*LOOPBACK_NAMES, self.host.lower())


def parse_bind(text: str) -> Bind:
    """``HOST:PORT`` (``[::1]:8750`` for IPv6); port 0 picks a free port."""
    try:
        host, port = parse_address(text)
    except ValueError:
        raise UsageError(
            f"--bind: expected HOST:PORT such as 127.0.0.1:8750 or [::1]:8750, got {text!r}"
        ) from None
    return Bind(host, port)


class _Handler(BaseHTTPRequestHandler):
    server_version = "chronod-web"
    sys_version = ""
    timeout = REQUEST_TIMEOUT

    def __init__(self, app: WebApp, bind: Bind, *args: Any) -> None:
        self.app = app  # before the base class, which handles the request at once
        self.bind = bind
        super().__init__(*args)

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve(b"")

    def do_HEAD(self) -> None:
        # A GET without its body (uptime checks, curl -I); _send leaves the body out.
        self._serve(b"", method="GET")

    def do_POST(self) -> None:
        body = self._read_body()
        if body is not None:
            self._serve(body)

    def do_PUT(self) -> None:
        self._serve(b"")

    def do_DELETE(self) -> None:
        self._serve(b"")

    def do_PATCH(self) -> None:
        self._serve(b"")

    def _serve(self, body: bytes, method: str | None = None) -> None:
        if not self.bind.host_allowed(self.headers.get("Host")):
            self._send(error_response(403, "unexpected Host header; open the page by its address"))
            return
        url = urlsplit(self.path)
        request = Request(
            method=method or self.command,
            path=url.path,
            query=dict(parse_qsl(url.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client=self.client_address[0],
        )
        self._send(self.app.handle(request))

    def _read_body(self) -> bytes | None:
        """The body, or None after answering 411/413.

        An oversized body is still read (up to DISCARD_LIMIT) before the refusal: closing a socket
        with unread data makes the kernel reset the connection, and the client would see a reset
        instead of the reason.
        """
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._send(error_response(411, "a POST needs a Content-Length (and a JSON body)"))
            return None
        length = int(length_text)
        if length > MAX_BODY:
            if length <= DISCARD_LIMIT:
                self.rfile.read(length)
            self._send(error_response(413, f"request body over {MAX_BODY} bytes"))
            return None
        return self.rfile.read(length)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", response.cache)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests (bad request line, oversized headers, unknown method) get the same
        # JSON errors and headers as everything else, not the stock HTML page.
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._send(error_response(code, text))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


@dataclass(frozen=True)
class WebHandle:
    """A running web server; :meth:`stop` shuts it down and waits for its thread."""

    listener: HTTPListener

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    @property
    def url(self) -> str:
        return f"http://{format_address(*self.address)}/"

    def stop(self) -> None:
        self.listener.stop()


def start_web(
    config_file: Path,
    store_override: str | None,
    bind: str = DEFAULT_BIND,
    *,
    clock: Clock | None = None,
    token: str | None = None,
) -> WebHandle:
    """Serve the page on ``bind`` from a background thread (``chronod web``, and tests).

    ``token`` (default: ``$CHRONOD_WEB_TOKEN``) overrides ``[chronod] web_token``. Raises
    ConfigError for an invalid config, UsageError for a bad ``bind``, :class:`BindError` if it
    cannot listen there (taken, not an address of this host, a name that does not resolve).
    """
    where = parse_bind(bind)
    used_clock = clock or SystemClock()

    def opener(config: Config) -> Store:
        # Never creates a store: that is a daemon's first act, and a page opened on the wrong
        # config must not leave an empty database where an operator then looks (see ops).
        return open_store(store_settings(config, store_override), used_clock, create=False)

    app = WebApp(
        config=ConfigSource(config_file),
        open_store=opener,
        env_token=token if token is not None else env_token(),
    )
    listener = HTTPListener.start(
        (where.host, where.port),
        partial(_Handler, app, where),
        option="--bind",
        error=BindError,
        thread_name="chronod-web",
    )
    handle = WebHandle(listener)
    _announce(handle, where, app)
    return handle


def _announce(handle: WebHandle, where: Bind, app: WebApp) -> None:
    actions = "on (token required)" if app.actions_enabled else "off (no web_token: read-only)"
    event(log, logging.INFO, "web page serving", url=handle.url, actions=actions)
    if not where.loopback:
        event(
            log,
            logging.WARNING,
            "web page bound to a non-loopback address: anyone who can reach it can read the "
            "schedule, history and output tails, and the token travels in clear text; put it "
            "behind a TLS proxy with authentication",
            bind=format_address(where.host, where.port),
        )


def serve(
    config_file: Path, store_override: str | None, bind: str, clock: Clock | None = None
) -> int:
    """``chronod web``: serve until SIGTERM or SIGINT; the exit code."""
    # A self-pipe, not a threading.Event: a handler runs between two bytecodes of the main thread,
    # possibly inside Event.wait() holding the Event's lock, and Event.set() would then wait for
    # that lock forever (the hang chronod run once had at stop). And the pipe is the wakeup fd, so
    # a signal the kernel hands to the server's thread still wakes the main thread (Waker).
    stopping: list[bool] = []
    waker = Waker()
    waker.wake_on_signals()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(True)  # the wakeup fd has woken the loop already

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        handle = start_web(config_file, store_override, bind, clock=clock)
        try:
            while not stopping:
                waker.wait(3600.0)
        finally:
            handle.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        waker.close()
    event(log, logging.INFO, "web page stopped")
    return 0
