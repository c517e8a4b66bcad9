"""Real receivers on loopback for notification tests: an HTTP server that records every request
(and can be told to fail), and an SMTP server (aiosmtpd) that records every message."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HTTPRecorder:
    """Records POSTs; answers ``status`` (200 unless a test sets another)."""

    requests: list[Request] = field(default_factory=list)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)


def serve_http() -> Iterator[HTTPRecorder]:
    recorder = HTTPRecorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(size)
            with recorder.lock:
                status = recorder.status
                if status < 300:
                    recorder.requests.append(Request(self.path, dict(self.headers), data))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.server = server
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SMTPRecorder:
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    port: int = 0


def serve_smtp() -> Iterator[SMTPRecorder]:
    from aiosmtpd.controller import Controller

    recorder = SMTPRecorder()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            recorder.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            recorder.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd's controller cannot start on port 0
        probe.bind(("127.0.0.1", 0))
        recorder.port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()
