"""Frames: how a worker, its fork server and the server's runs talk (a 4-byte big-endian length,
then a JSON object), with descriptors attached to a frame by ``SCM_RIGHTS``.

Standard library only: the fork server (:mod:`chronod._forkserver`) and the processes it forks
(:mod:`chronod._runchild`) import it.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Mapping
from typing import Any

FRAME = struct.Struct(">I")
MAX_FDS = 2  # attached to a request: the output pipe, and a call's report pipe
MAX_FRAME = 1 << 28  # bytes; a longer frame is a protocol error, not a request


class ProtocolError(Exception):
    """A frame that is not what the protocol says."""


def encode(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return FRAME.pack(len(body)) + body


def send(sock: socket.socket, message: Mapping[str, Any], fds: list[int] | None = None) -> None:
    """One frame, with ``fds`` attached to its first bytes. Blocks."""
    frame = encode(message)
    sent = socket.send_fds(sock, [frame], fds) if fds else 0
    if sent < len(frame):
        sock.sendall(frame[sent:])


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One frame and the descriptors attached to it; None at end-of-file. Blocks."""
    header = b""
    fds: list[int] = []
    while len(header) < FRAME.size:
        data, got, flags, _ = socket.recv_fds(sock, FRAME.size - len(header), MAX_FDS)
        fds += got
        if flags & socket.MSG_CTRUNC or not data:
            for fd in fds:
                os.close(fd)
            if not data and not header:
                return None
            raise ProtocolError("a truncated frame or too many descriptors")
        header += data
    (size,) = FRAME.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"a frame of {size} bytes")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise ProtocolError("end-of-file inside a frame")
        body += chunk
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ProtocolError("a frame that is not a JSON object")
    return message, fds


class Frames:
    """Splits a byte stream into decoded messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ProtocolError(f"a frame of {size} bytes")
            if len(self._buffer) < FRAME.size + size:
                break
            body = bytes(self._buffer[FRAME.size : FRAME.size + size])
            del self._buffer[: FRAME.size + size]
            message = json.loads(body)
            if not isinstance(message, dict):
                raise ProtocolError("a frame that is not a JSON object")
            messages.append(message)
        return messages
