"""Why a server cannot listen, in one line: ``chronod web --bind`` and ``--metrics`` alike."""

from __future__ import annotations

import errno
import socket


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
