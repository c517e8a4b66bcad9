"""The fork server: a small process that starts every run of one worker child (docs/design.md §4).

Why
    A run needs a process of its own, in a session of its own, tied to its worker so that it dies
    with it (``PR_SET_PDEATHSIG``). Forking the worker itself for that (a ~40 MB interpreter with a
    store client and a logging set-up) costs each run milliseconds of page-table copying and
    clean-up, and ``subprocess``'s ``preexec_fn`` forces it off ``vfork``. This process imports the
    standard library only (plus :mod:`chronod._proc` and :mod:`chronod._call`, which do too), holds
    no connection and runs no thread, so forking it is cheap and safe, whatever the worker holds.

Processes
    ``worker child ─(fork+exec)→ fork server ─(fork)→ run ─(exec, for a command)→ the program``.
    The worker starts the server (``python -m chronod._forkserver FD WORKER_PID``) and talks to it
    over a socketpair. The server has ``PR_SET_PDEATHSIG = SIGKILL`` tied to its worker and leaves
    when its socket reaches end-of-file; each run has ``PR_SET_PDEATHSIG = SIGKILL`` tied to the
    server: a worker that dies takes its server and so its run down with it. The server ignores
    SIGINT, SIGTERM, SIGHUP and SIGQUIT (a terminal's Ctrl-C reaches the whole process group): it
    follows its worker, which handles them. Each run starts in its own session with the signal
    dispositions and mask a freshly started program expects.

Protocol (frames: a 4-byte big-endian length, then a JSON object)
    worker → server
        First ``{"sys_path": [...], "mask": [...]}`` (the worker's module search path, which call
        targets resolve against, and the signal mask runs start with). Then one request per run:
        ``{"argv": [...], "env": {...}, "cwd": ...}`` for a command, ``{"call": "module:function",
        "args": [...], "kwargs": {...}, "env": {...}, "cwd": ..., "cache": bool}`` for a call, with
        the run's output pipe (and, for a call, its report pipe) attached (``SCM_RIGHTS``).
    server → worker
        ``{"started": PID}`` once the run is in its own session (so the worker may signal its
        group, whose id is PID) and has exec'd its program, or is about to import its call target;
        ``{"failed": "..."}`` if it could not be started (no such program, bad ``cwd``); later
        ``{"exited": PID, "status": STATUS}`` (a wait status) when the server has reaped it;
        ``{"retiring": MODULE}`` (see below).

Call modules
    With ``cache`` (the worker asks for it when the job sets neither ``env`` nor ``cwd``, so an
    import here sees what the run's own import would see), the server also imports the call's module
    itself, right after starting the first run that needs it: later runs are forked with it already
    imported. As with Celery's prefork pool, module-level code then runs once per fork server, not
    once per run, with the worker's environment: it must not start threads (a fork copies only the
    forking thread) and must not read per-run state such as ``CHRONOD_RUN_ID`` (read it in the
    function). A server that finds itself running a thread after such an import says
    ``{"retiring": MODULE}`` and exits once its runs are over; the worker starts a new one and never
    asks it to cache that module again. Import output is discarded (the first run's own import
    printed it into its output); an import that fails is not retried here (the runs import the
    module themselves and report what goes wrong).

The client side, :class:`ForkServer`, lives here too (one module for one protocol); it imports
``subprocess`` only when it starts a server, so the server itself never does.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from chronod import _call
from chronod._proc import (
    FORK_BLOCKED,
    die_with_parent,
    set_nonblocking,
    signal_name,
    wait_readable,
)

if TYPE_CHECKING:
    import subprocess

FRAME = struct.Struct(">I")
MAX_FDS = 2  # attached to a request: the output pipe, and a call's report pipe
MAX_FRAME = 1 << 28  # bytes; a longer frame is a protocol error, not a request
START_TIMEOUT = 30.0  # seconds the worker waits for "started"/"failed" before giving up on a server
CLOSE_TIMEOUT = 5.0  # seconds a closing server gets to leave before it is killed

# Exit codes of the server.
EXIT_OK = 0  # its worker closed the socket
EXIT_ORPHANED = 3  # its worker was gone before the server could tie itself to it
EXIT_THREADED = 4  # a cached call module started a thread: forking is no longer safe here
EXIT_PROTOCOL = 76  # EX_PROTOCOL: an unreadable frame
EXIT_NAMES = {
    EXIT_OK: "closed",
    EXIT_ORPHANED: "orphaned",
    EXIT_THREADED: "retired: a cached call module started a thread",
    EXIT_PROTOCOL: "protocol error",
}
# Exit code of a run that could not be started (its reason goes to the worker as "failed").
EXIT_NOT_STARTED = 127
# What the server changes from a new program's defaults, restored in every run.
SERVER_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Python ignores these at start-up; a program exec'd by a run gets the default back, as
# subprocess's ``restore_signals`` does.
PYTHON_IGNORED = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


class ProtocolError(Exception):
    """A frame that is not what the protocol says."""


class ServerLost(Exception):
    """The fork server is gone (its socket reached end-of-file)."""


class StartFailed(OSError):
    """A run could not be started; ``str()`` says why."""


def encode(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return FRAME.pack(len(body)) + body


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


# --------------------------------------------------------------------------------------------------
# The server process


def main(argv: Sequence[str]) -> int:
    """``python -m chronod._forkserver SOCKET_FD WORKER_PID``."""
    fd, worker = int(argv[0]), int(argv[1])
    die_with_parent(signal.SIGKILL)
    if os.getppid() != worker:
        return EXIT_ORPHANED
    for sig in SERVER_IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    server = _Server(socket.socket(fileno=fd))
    try:
        return server.serve()
    except ProtocolError as exc:
        print(f"chronod fork server: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL
    except (BrokenPipeError, ConnectionResetError):
        return EXIT_OK  # its worker is gone: so are we (and, with us, any run still going)


class _Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = os.getpid()
        self.mask: frozenset[int] = frozenset()
        self.running: set[int] = set()
        self.cached: set[str] = set()  # modules whose import was tried here
        self.retiring = False
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.wake_r, self.wake_w = os.pipe()
        set_nonblocking(self.wake_r)
        set_nonblocking(self.wake_w)

    def serve(self) -> int:
        received = self._receive()
        if received is None:
            return EXIT_OK
        settings, fds = received
        for fd in fds:
            os.close(fd)
        sys.path[:] = [str(p) for p in settings.get("sys_path", sys.path)]
        self.mask = frozenset(int(s) for s in settings.get("mask", ()))
        # SIGCHLD: a Python handler, so that the C-level handler writes to the wake-up pipe.
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _nothing)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask - {signal.SIGCHLD})
        while not (self.retiring and not self.running):
            ready = wait_readable([self.sock.fileno(), self.wake_r], 60.0)
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 1024)
            self._reap()
            if self.sock.fileno() in ready:
                received = self._receive()
                if received is None:
                    return EXIT_OK
                self._start(*received)
        return EXIT_THREADED

    # -- the socket -------------------------------------------------------------------------------

    def _receive(self) -> tuple[dict[str, Any], list[int]] | None:
        """One frame and the descriptors attached to it; None at end-of-file. Blocks."""
        header = b""
        fds: list[int] = []
        while len(header) < FRAME.size:
            data, got, flags, _ = socket.recv_fds(self.sock, FRAME.size - len(header), MAX_FDS)
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
            chunk = self.sock.recv(size - len(body))
            if not chunk:
                raise ProtocolError("end-of-file inside a frame")
            body += chunk
        message = json.loads(body)
        if not isinstance(message, dict):
            raise ProtocolError("a frame that is not a JSON object")
        return message, fds

    def _send(self, message: Mapping[str, Any]) -> None:
        self.sock.sendall(encode(message))

    # -- runs -------------------------------------------------------------------------------------

    def _start(self, request: dict[str, Any], fds: list[int]) -> None:
        err_r, err_w = os.pipe()  # close-on-exec: end-of-file once the run has exec'd
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (err_r, err_w, *fds):
                os.close(fd)
            self._send({"failed": f"fork: {exc}"})
            return
        if pid == 0:
            _run(self, request, fds, err_w)
        for fd in (err_w, *fds):
            os.close(fd)
        error = _read_to_end(err_r)
        os.close(err_r)
        if error:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # it has exited, or is about to
            self._send({"failed": error.decode("utf-8", errors="replace")})
            return
        self.running.add(pid)
        self._send({"started": pid})
        if request.get("cache") and isinstance(request.get("call"), str):
            self._cache(request["call"].partition(":")[0])

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.running:
                self.running.discard(pid)
                self._send({"exited": pid, "status": status})

    def _cache(self, module: str) -> None:
        """Import a call's module here, so that later runs are forked with it (module docstring)."""
        if module in self.cached or self.retiring:
            return
        self.cached.add(module)
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                importlib.import_module(module)
        except BaseException:  # whatever it is: the runs import it and report what goes wrong
            return
        if _threads() > 1:
            self.retiring = True
            self._send({"retiring": module})


def _nothing(_sig: int, _frame: object) -> None:
    pass


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _threads() -> int:
    """Threads in this process (Linux: ``/proc``; elsewhere what :mod:`threading` knows of)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        threading = sys.modules.get("threading")
        return int(threading.active_count()) if threading is not None else 1


# --------------------------------------------------------------------------------------------------
# One run, in the process just forked from the server: never returns


def _run(server: _Server, request: dict[str, Any], fds: list[int], err_w: int) -> NoReturn:
    try:
        err_w = _detach(server, request, fds, err_w)
        argv = request.get("argv")
        if argv is not None:
            os.execvpe(argv[0], argv, request["env"])  # PATH from the run's environment
        _call.enter(request["env"])
    except BaseException as exc:  # whatever it is: reported to the worker as "cannot start"
        with contextlib.suppress(OSError):
            os.write(err_w, str(exc if isinstance(exc, OSError) else repr(exc)).encode())
        os._exit(EXIT_NOT_STARTED)
    os.close(err_w)  # started: from here on, what goes wrong is the call's own failure
    os._exit(_call.run(request["call"], request.get("args", ()), request.get("kwargs", {})))


def _detach(server: _Server, request: dict[str, Any], fds: list[int], err_w: int) -> int:
    """Leave the server's session, signals and descriptors; returns the error pipe's descriptor."""
    os.setsid()
    # The run must not outlive its server (and so its worker) unsupervised.
    die_with_parent(signal.SIGKILL)
    if os.getppid() != server.pid:
        os._exit(_call.EXIT_ORPHANED)
    is_call = "argv" not in request
    _reset_signals(is_call=is_call)
    signal.pthread_sigmask(signal.SIG_SETMASK, server.mask)
    os.dup2(server.devnull, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    keep = {err_w}
    if is_call:
        if err_w == _call.REPORT_FD:
            err_w = os.dup(err_w)  # above 3: 0-3 are all taken
            keep = {err_w}
        os.dup2(fds[1], _call.REPORT_FD)
        keep.add(_call.REPORT_FD)
    _close_all_but(keep)
    cwd = request.get("cwd")
    if cwd is not None:
        os.chdir(cwd)
    return err_w


def _reset_signals(*, is_call: bool) -> None:
    for sig in (*SERVER_IGNORED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    if is_call:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a Python program's default
    else:
        for sig in PYTHON_IGNORED:
            signal.signal(sig, signal.SIG_DFL)


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


# --------------------------------------------------------------------------------------------------
# The worker's side


class ForkServer:
    """A worker's fork server: started on first use, restarted when it died; one run at a time.

    ``notice`` is told (one line) when a server is found gone and replaced.
    """

    def __init__(
        self,
        *,
        sys_path: Sequence[str] | None = None,
        notice: Callable[[str], None] | None = None,
        python: str | None = None,
    ) -> None:
        self.sys_path = [str(p) for p in (sys.path if sys_path is None else sys_path)]
        self.notice = notice or (lambda _message: None)
        self.python = python or sys.executable
        self._popen: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._frames = Frames()
        self._replies: list[dict[str, Any]] = []
        self._exits: dict[int, int] = {}
        self._uncached: set[str] = set()  # modules whose caching made a server retire
        self.lost = False  # the current server's socket reached end-of-file

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def fileno(self) -> int | None:
        """The socket to wait on for exits; None when there is no live server."""
        return None if self._sock is None or self.lost else self._sock.fileno()

    def ensure(self) -> None:
        """Have a live server: start one, or replace one that is gone."""
        live = self._sock is not None and not self.lost
        if live and self._popen is not None and self._popen.poll() is None:
            return
        if self._popen is not None:
            self._discard()
        self._launch()

    def spawn(self, request: Mapping[str, Any], fds: Sequence[int]) -> int:
        """Start a run (protocol in the module docstring); returns its pid, which is also its
        process group id. Raises :class:`StartFailed`. A server found gone is replaced and the
        request sent once more."""
        request = dict(request)
        call = request.get("call")
        if isinstance(call, str) and call.partition(":")[0] in self._uncached:
            request["cache"] = False
        for last in (False, True):
            self.ensure()
            self._exits.clear()  # one run at a time: whatever is left belongs to an earlier one
            try:
                return self._spawn_once(request, fds)
            except ServerLost:
                if last:
                    raise StartFailed("the fork server died while starting the run") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def pump(self) -> None:
        """Read what the server said, without blocking."""
        if self._sock is None or self.lost:
            return
        while True:
            try:
                data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.lost = True
                return
            for message in self._frames.feed(data):
                self._take(message)

    def exit_status(self, pid: int) -> int | None:
        """The wait status of run ``pid`` once the server reported it (consumed)."""
        return self._exits.pop(pid, None)

    def reaped(self, pid: int, status: int) -> None:
        """Someone else reaped child ``pid`` (a worker reaping strays): if it was the server, note
        it, so that it is replaced and not waited for."""
        if self._popen is not None and self._popen.pid == pid:
            self._popen.returncode = os.waitstatus_to_exitcode(status)
            self.lost = True

    def close(self) -> None:
        """Let the server go (it leaves at end-of-file) and reap it."""
        if self._popen is None:
            return
        self._discard(quiet=True)

    # -- internals --------------------------------------------------------------------------------

    def _launch(self) -> None:
        import subprocess

        ours, theirs = socket.socketpair()
        # Blocked in the new process until it has its own dispositions (see FORK_BLOCKED).
        normal = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            self._popen = subprocess.Popen(
                [self.python, "-m", "chronod._forkserver", str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, normal)
            theirs.close()
        self._sock = ours
        self._frames = Frames()
        self._replies.clear()
        self._exits.clear()
        self.lost = False
        try:
            ours.sendall(encode({"sys_path": self.sys_path, "mask": sorted(normal)}))
        except OSError:
            self.lost = True

    def _discard(self, *, quiet: bool = False) -> None:
        import subprocess

        popen, sock = self._popen, self._sock
        self._popen, self._sock = None, None
        if sock is not None:
            sock.close()
        assert popen is not None
        try:
            code = popen.wait(timeout=CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            popen.kill()
            code = popen.wait()
        if not quiet:
            self.notice(
                f"fork server (pid {popen.pid}) gone ({_exit_text(code)}): starting a new one"
            )

    def _spawn_once(self, request: Mapping[str, Any], fds: Sequence[int]) -> int:
        assert self._sock is not None
        if self.lost:
            raise ServerLost
        frame = encode(request)
        try:
            sent = socket.send_fds(self._sock, [frame], list(fds))
            if sent < len(frame):
                self._sock.sendall(frame[sent:])
        except OSError:
            self.lost = True
            raise ServerLost from None
        reply = self._await_reply()
        if "started" in reply:
            return int(reply["started"])
        raise StartFailed(str(reply.get("failed", "the fork server refused the run")))

    def _await_reply(self) -> dict[str, Any]:
        assert self._sock is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._replies:
            if self.lost:
                raise ServerLost
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise StartFailed(f"the fork server did not answer within {START_TIMEOUT:g}s")
            wait_readable([self._sock.fileno()], left)
            self.pump()
        return self._replies.pop(0)

    def _take(self, message: dict[str, Any]) -> None:
        if "exited" in message:
            self._exits[int(message["exited"])] = int(message["status"])
        elif "retiring" in message:
            self._uncached.add(str(message["retiring"]))
        else:
            self._replies.append(message)

    def _kill(self) -> None:
        if self._popen is not None:
            self._popen.kill()
        self.lost = True


def _exit_text(code: int) -> str:
    if code < 0:
        return f"killed by {signal_name(-code)}"
    return f"exit {code}: {EXIT_NAMES.get(code, '?')}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
