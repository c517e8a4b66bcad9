"""The process that becomes a run, forked by the fork server (:mod:`chronod._forkserver`).

Two ways in, one way on:

On demand (:func:`run`)
    The server forks a process for a request it holds: the process leaves the server's session,
    signals and descriptors, then execs the command or calls the function. It reports a failure to
    start on a close-on-exec pipe; end-of-file there means "started".
Ahead of need (:func:`spare`)
    The server forks a *spare* whenever it has no run going (when it starts, and after each
    run's end), before any request for it exists: the spare does everything that does not depend
    on the run (its own session, ``PR_SET_PDEATHSIG``, default signal handling, stdin from
    ``/dev/null``, no inherited descriptor but its channel to the server; after a call, that
    call's standard streams and environment, rehearsed: :func:`chronod._call.rehearse`) and then
    waits on that channel. The server hands the next request to it, so no fork lies between the
    worker's request and the run's first instruction: the fork is made while the worker records
    the last result and claims the next run, or waits for one. The spare is still a fresh fork of
    the server, used for one run only: a run sees exactly what an on-demand run sees (the process
    tests hold both to it).

Spare channel (a stream socket pair)
    server → spare: the request as the worker sent it (a frame of :mod:`chronod._frames`), with the
    run's output pipe (and report pipe) attached. spare → server: :data:`TAKEN` as soon as it read
    the request (end-of-file before it means the spare died first: the server forks the run
    itself), then the reason if the run cannot start; end-of-file (the channel is close-on-exec,
    and a call closes it before importing its target) means it started, as for the pipe of an
    on-demand run. A spare whose channel reaches end-of-file while it waits leaves (exit 0).

Standard library only (plus :mod:`chronod._proc`, :mod:`chronod._call` and :mod:`chronod._frames`):
the fork server imports this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from chronod import _call, _frames
from chronod._proc import die_with_parent

# Exit code of a run that could not be started (its reason goes to the worker as "failed").
EXIT_NOT_STARTED = 127
# What the server changes from a new program's defaults, restored in every run.
SERVER_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Python ignores these at start-up; a program exec'd by a run gets the default back, as
# subprocess's ``restore_signals`` does.
PYTHON_IGNORED = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)
FIRST_FREE_FD = 10  # the spare's channel moves at least this high: 0-3 are the run's
TAKEN = b"+"  # what a spare writes first once it has read its request


class Setting:
    """What a run takes from its fork server: the server's pid, the signal mask runs start with,
    a descriptor open on ``/dev/null``, and the environment of the last run it started if that run
    was a call (a spare rehearses a call with it; before a command, which execs, nothing is worth
    rehearsing)."""

    def __init__(self, server_pid: int, mask: frozenset[int], devnull: int) -> None:
        self.server_pid = server_pid
        self.mask = mask
        self.devnull = devnull
        self.last_call_env: Mapping[str, str] | None = None


# --------------------------------------------------------------------------------------------------
# On demand


def run(setting: Setting, request: dict[str, Any], fds: list[int], err_w: int) -> NoReturn:
    """The child of a fork for ``request`` (``fds``: its output pipe, and a call's report pipe);
    ``err_w`` gets the reason if it cannot start. Never returns."""
    try:
        _leave_server(setting)
    except BaseException as exc:  # whatever it is: reported to the worker as "cannot start"
        _cannot_start(err_w, exc)
    _start(request, fds, err_w, streams=True)


# --------------------------------------------------------------------------------------------------
# Ahead of need


def spare(setting: Setting, channel: int) -> NoReturn:
    """The child of a fork made before any request: prepare, wait on ``channel``, run. Never
    returns (the module docstring says what goes over the channel)."""
    try:
        _leave_server(setting)
        # Close-on-exec: a command's exec is what closes it. Above 0-3, which the run takes.
        moved = fcntl.fcntl(channel, fcntl.F_DUPFD_CLOEXEC, FIRST_FREE_FD)
        _close_all_but({moved})
        rehearsed = setting.last_call_env is not None
        if setting.last_call_env is not None:
            _call.rehearse(setting.last_call_env)
        sock = socket.socket(fileno=moved)
        received = _frames.receive(sock)
        sock.detach()  # the descriptor stays open: it says "taken", then "started"
    except BaseException:  # the server forks the run itself
        os._exit(EXIT_NOT_STARTED)
    if received is None:
        os._exit(0)  # its server let it go
    request, fds = received
    try:
        os.write(moved, TAKEN)
    except OSError:  # its server is gone, and the run with it
        os._exit(EXIT_NOT_STARTED)
    _start(
        request, fds, moved, streams=not rehearsed
    )  # the channel is above 3: it stays where it is


# --------------------------------------------------------------------------------------------------
# What both do


def _start(request: dict[str, Any], fds: list[int], report: int, *, streams: bool) -> NoReturn:
    """Take the run's descriptors, signals, cwd and environment, then exec its command or call its
    function; ``report`` gets the reason if it cannot start, and is closed once it has."""
    try:
        report = _take_fds(request, fds, report)
        _close_all_but(_kept(request, report))
        _begin(request, streams=streams)
    except BaseException as exc:  # whatever it is: reported to the worker as "cannot start"
        _cannot_start(report, exc)
    os.close(report)  # started: from here on, what goes wrong is the call's own failure
    os._exit(_call.run(request["call"], request.get("args", ()), request.get("kwargs", {})))


def _cannot_start(report: int, exc: BaseException) -> NoReturn:
    with contextlib.suppress(OSError):
        os.write(report, str(exc if isinstance(exc, OSError) else repr(exc)).encode())
    os._exit(EXIT_NOT_STARTED)


def _leave_server(setting: Setting) -> None:
    """Its own session, tied to the server, with a new program's signals; stdin ``/dev/null``."""
    os.setsid()
    # The run must not outlive its server (and so its worker) unsupervised.
    die_with_parent(signal.SIGKILL)
    if os.getppid() != setting.server_pid:
        os._exit(_call.EXIT_ORPHANED)
    for sig in (*SERVER_IGNORED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, setting.mask)
    os.dup2(setting.devnull, 0)


def _take_fds(request: Mapping[str, Any], fds: list[int], keep: int) -> int:
    """The output pipe on 1 and 2, a call's report pipe on 3; returns where ``keep`` (the
    descriptor that says "cannot start") is now: moved off 3 if a call needs 3."""
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    if "argv" in request:
        return keep
    if keep == _call.REPORT_FD:
        keep = os.dup(keep)  # above 3: 0-3 are all taken
    os.dup2(fds[1], _call.REPORT_FD)
    return keep


def _kept(request: Mapping[str, Any], fd: int) -> set[int]:
    return {fd} if "argv" in request else {fd, _call.REPORT_FD}


def _begin(request: Mapping[str, Any], *, streams: bool = True) -> None:
    """Signals by kind, the run's cwd, then exec a command (never returns) or enter a call."""
    if "argv" in request:
        for sig in PYTHON_IGNORED:
            signal.signal(sig, signal.SIG_DFL)
    else:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a Python program's default
    cwd = request.get("cwd")
    if cwd is not None:
        os.chdir(cwd)
    argv = request.get("argv")
    if argv is not None:
        os.execvpe(argv[0], argv, request["env"])  # PATH from the run's environment
    _call.enter(request["env"], streams=streams)


def _close_all_but(keep: Iterable[int]) -> None:
    """Close every descriptor from 3 up except ``keep`` (``closerange`` is one system call)."""
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, _max_fd())


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 1024
