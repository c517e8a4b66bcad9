"""The fork server: a small process that starts every run of one worker child (docs/design.md §4).

Why
    A run needs a process of its own, in a session of its own, tied to its worker so that it dies
    with it (``PR_SET_PDEATHSIG``). Forking the worker itself for that (a ~40 MB interpreter with a
    store client and a logging set-up) costs each run milliseconds of page-table copying and
    clean-up, and ``subprocess``'s ``preexec_fn`` forces it off ``vfork``. This process imports the
    standard library only (plus :mod:`chronod._proc`, :mod:`chronod._call`, :mod:`chronod._frames`
    and :mod:`chronod._runchild`, which do too), holds no connection and runs no thread, so
    forking it is cheap and safe, whatever the worker holds.

Processes
    ``worker child ─(fork+exec)→ fork server ─(fork)→ run ─(exec, for a command)→ the program``.
    The worker starts the server (``python -m chronod._forkserver FD WORKER_PID``) and talks to it
    over a socketpair. The server has ``PR_SET_PDEATHSIG = SIGKILL`` tied to its worker and leaves
    when its socket reaches end-of-file; each run has ``PR_SET_PDEATHSIG = SIGKILL`` tied to the
    server: a worker that dies takes its server and so its run down with it. The server ignores
    SIGINT, SIGTERM, SIGHUP and SIGQUIT (a terminal's Ctrl-C reaches the whole process group): it
    follows its worker, which handles them. Each run starts in its own session with the signal
    dispositions and mask a freshly started program expects (:mod:`chronod._runchild`).

Protocol (frames of :mod:`chronod._frames`: a 4-byte big-endian length, then a JSON object)
    worker → server
        First ``{"sys_path": [...], "mask": [...]}`` (the worker's module search path, which call
        targets resolve against, and the signal mask runs start with). Then, for each run, either
        ``{"spare": true, "cache": MODULE}`` with one end of a new socketpair attached: fork the
        next run's process now, ahead of need, after importing ``MODULE`` if given (see below);
        the worker sends that run's request straight to it (the spare channel in
        :mod:`chronod._runchild`). Or, when the worker has no live spare, the request itself:
        ``{"argv": [...], "env": {...}, "cwd": ...}`` for a command, ``{"call":
        "module:function", "args": [...], "kwargs": {...}, "env": {...}, "cwd": ..., "cache":
        bool}`` for a call, with the run's output pipe (and, for a call, its report pipe)
        attached (``SCM_RIGHTS``).
    server → worker
        ``{"started": PID}`` once a requested run is in its own session (so the worker may signal
        its group, whose id is PID) and has exec'd its program, or is about to import its call
        target; ``{"failed": "..."}`` if it could not be started (no such program, bad ``cwd``);
        ``{"exited": PID, "status": STATUS}`` (a wait status) when the server has reaped a run or
        a spare; ``{"retiring": MODULE}`` (see below).

Call modules
    With ``cache`` (the worker asks for it when the job sets neither ``env`` nor ``cwd``, so an
    import here sees what the run's own import would see), the server also imports the call's
    module itself, right after starting the first run that needs it (before it forks the next
    spare): later runs are forked with it already imported. As with Celery's prefork pool,
    module-level code then runs once per fork server, not once per run, with the worker's
    environment: it must not start threads (a fork copies only the forking thread) and must not
    read per-run state such as ``CHRONOD_RUN_ID`` (read it in the function). A server that finds
    itself running a thread after such an import says ``{"retiring": MODULE}``, forks no more
    spares and exits once its runs are over; the worker starts a new one and never asks it to
    cache that module again. Import output is discarded (the first run's own import printed it into
    its output); an import that fails is not retried here (the runs import the module themselves
    and report what goes wrong).

The client side, :class:`ForkServer`, lives here too (one module for one protocol); it imports
``subprocess`` only when it starts a server, so the server itself never does.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chronod import _frames, _runchild
from chronod._frames import Frames, ProtocolError, encode
from chronod._proc import (
    FORK_BLOCKED,
    die_with_parent,
    set_nonblocking,
    signal_name,
    wait_readable,
)

if TYPE_CHECKING:
    import subprocess

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


class ServerLost(Exception):
    """The fork server is gone (its socket reached end-of-file)."""


class StartFailed(OSError):
    """A run could not be started; ``str()`` says why."""


# --------------------------------------------------------------------------------------------------
# The server process


def main(argv: Sequence[str]) -> int:
    """``python -m chronod._forkserver SOCKET_FD WORKER_PID``."""
    fd, worker = int(argv[0]), int(argv[1])
    die_with_parent(signal.SIGKILL)
    if os.getppid() != worker:
        return EXIT_ORPHANED
    for sig in _runchild.SERVER_IGNORED:
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
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.setting = _runchild.Setting(self.pid, self.mask, self.devnull)
        self.running: set[int] = set()
        self.cached: set[str] = set()  # modules whose import was tried here
        self.retiring = False
        self.spare: tuple[int, socket.socket] | None = (
            None  # the next run's process, and its channel
        )
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
        self.setting = _runchild.Setting(self.pid, self.mask, self.devnull)
        # SIGCHLD: a Python handler, so that the C-level handler writes to the wake-up pipe.
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _nothing)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask - {signal.SIGCHLD})
        while not (self.retiring and not self.running):
            if not self.running:
                self._fork_spare()
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
        return _frames.receive(self.sock)

    def _send(self, message: Mapping[str, Any]) -> None:
        _frames.send(self.sock, message)

    # -- runs -------------------------------------------------------------------------------------

    def _start(self, request: dict[str, Any], fds: list[int]) -> None:
        """Start the run in the spare, or fork it now if no spare took it; then, with the run
        going, import its call module (if asked). The next spare follows once it has ended."""
        started = self._hand_to_spare(request, fds)
        if started is None:
            started = self._fork_run(request, fds)
        # What the next spare rehearses: the next run is most likely this job's again.
        call_env = request.get("env") if "call" in request else None
        self.setting.last_call_env = call_env if isinstance(call_env, dict) else None
        for fd in fds:
            os.close(fd)
        pid, error = started
        if error is not None:
            if pid > 0:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)  # it has exited, or is about to
            self._send({"failed": error})
        else:
            self.running.add(pid)
            self._send({"started": pid})
            if request.get("cache") and isinstance(request.get("call"), str):
                self._cache(request["call"].partition(":")[0])

    def _hand_to_spare(
        self, request: dict[str, Any], fds: list[int]
    ) -> tuple[int, str | None] | None:
        """(pid, why it cannot start or None) once the spare took the request and started the run;
        None when there is no spare or it died before it took the request (it is reaped as a
        stranger: no "exited" for it). The caller keeps ``fds``: a run forked now needs them."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        pid, channel = spare
        with channel:
            try:
                _frames.send(channel, request, fds)
                answer = _read_to_end(channel.fileno())
            except OSError:
                return None
        if not answer.startswith(_runchild.TAKEN):
            return None
        reason = answer[len(_runchild.TAKEN) :]
        return pid, (reason.decode("utf-8", errors="replace") if reason else None)

    def _fork_run(self, request: dict[str, Any], fds: list[int]) -> tuple[int, str | None]:
        """Fork the run now: (pid, why it cannot start or None)."""
        err_r, err_w = os.pipe()  # close-on-exec: end-of-file once the run has exec'd
        try:
            pid = _fork()
        except OSError as exc:
            os.close(err_r)
            os.close(err_w)
            return -1, f"fork: {exc}"
        if pid == 0:
            _runchild.run(self.setting, request, fds, err_w)
        os.close(err_w)
        error = _read_to_end(err_r)
        os.close(err_r)
        return pid, (error.decode("utf-8", errors="replace") if error else None)

    def _fork_spare(self) -> None:
        """Fork the next run's process ahead of need (:mod:`chronod._runchild`), between runs:
        while the worker records a result and claims the next run, not while a run goes on (the
        run's end would wait for the fork). Never from a server that is retiring: forking it is no
        longer safe."""
        if self.spare is not None or self.retiring:
            return
        ours, theirs = socket.socketpair()
        try:
            pid = _fork()
        except OSError:  # no spare: the next run is forked when it comes
            ours.close()
            theirs.close()
            return
        if pid == 0:
            _runchild.spare(self.setting, theirs.fileno())
        theirs.close()
        self.spare = (pid, ours)

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


def _fork() -> int:
    """``os.fork()``, with the server's objects frozen in the child (:func:`gc.freeze`): a
    collection in a run never walks them, so their pages are never written to, never copied (and
    they are not garbage there). The server goes on collecting its own."""
    gc.freeze()
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            gc.unfreeze()
    return pid


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
