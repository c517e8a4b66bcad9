"""Process plumbing shared by the worker pool and the runner: groups, exit statuses, Linux prctl.

Everything here is a thin, documented wrapper over one system call, so that :mod:`chronod.runner`
and :mod:`chronod.worker` read as policy. Linux-only features (``prctl``, ``pidfd_open``,
``/proc``) degrade to portable behaviour elsewhere: the callers poll instead of waiting on a
descriptor, and "is anything left in this group" falls back to ``killpg(pgid, 0)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import select
import signal
import sys
from collections.abc import Iterable
from types import FrameType

_LINUX = sys.platform.startswith("linux")
# Blocked while a process starts a child (worker child, fork server): the mask survives exec, so
# the new program starts with them blocked and unblocks them once its own handlers are in place.
# A signal sent meanwhile (a reload, a stop) then waits for those handlers instead of killing it
# half-started with the default action.
FORK_BLOCKED = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGCHLD,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
    }
)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once per process: a fork server's runs call ``prctl`` right after
    ``fork()``, and loading it there every time would cost each run a ``dlopen``."""
    if not _LINUX:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, value: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    try:
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except AttributeError:
        return False


def die_with_parent(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only).

    The caller must still compare :func:`os.getppid` with the parent it expects: a parent that
    died before this call is not reported.
    """
    return _prctl(_PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants instead of init (Linux only).

    A worker child does this so that the orphans a job leaves behind are its children: it can reap
    them (no zombies, whatever PID 1 does) and then reliably see that a job's group is empty.
    """
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def exit_code_of(status: int) -> tuple[int, str | None]:
    """A wait status as (exit code, reason); death by signal ``n`` is ``128 + n``, as shells say."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return 128 + number, f"killed by signal {signal_name(number)}"
    code = os.waitstatus_to_exitcode(status)
    return code, (None if code == 0 else f"exited with status {code}")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of group ``pgid``; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_process(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` (only while it is our unreaped child: a reaped pid may be reused)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def reap_group(pgid: int) -> list[tuple[int, int]]:
    """Reap every exited child in group ``pgid`` without blocking: [(pid, wait status)]."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def reap_strays() -> list[tuple[int, int]]:
    """Reap any exited child (adopted orphans of finished runs): [(pid, wait status)].

    Never blocks. It may reap a child the caller also tracks (a worker's fork server): the caller
    hands those statuses on."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still lives (zombies do not count).

    ``killpg(pgid, 0)`` answers for the common case (nothing left: ESRCH). When it says "something",
    that may only be zombies whose parent does not reap them (a container's PID 1, say); on Linux
    ``/proc`` tells the difference.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _LINUX or not os.path.isdir("/proc/self"):
        return True
    return any(True for _ in live_members(pgid))


def live_members(pgid: int) -> Iterable[int]:
    """Pids of the non-zombie processes in group ``pgid`` (Linux ``/proc``)."""
    with os.scandir("/proc") as entries:  # closed even when the caller stops at the first
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue  # exited while we looked
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) >= 3 and fields[0] != b"Z" and int(fields[2]) == pgid:
                yield int(entry.name)


def open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux >= 5.3), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def wait_readable(fds: Iterable[int], timeout: float) -> list[int]:
    """``select`` for reading, ``timeout`` seconds at most; an interrupting signal returns []."""
    try:
        ready, _, _ = select.select(list(fds), [], [], max(timeout, 0.0))
    except InterruptedError:
        return []
    return list(ready)


def close_quietly(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


def read_available(fd: int, budget: int = 1 << 20) -> tuple[bytes, bool]:
    """Read what ``fd`` (non-blocking) holds now, at most about ``budget`` bytes: (data, at EOF).

    The budget keeps a job that writes without pause from starving the caller's other duties
    (heartbeats, deadlines): the rest is read on the caller's next pass.
    """
    chunks: list[bytes] = []
    size = 0
    while size < budget:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks), False
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def only_caught(_sig: int, _frame: FrameType | None) -> None:
    """A signal handler that does nothing: catching a signal is what makes it wake a
    :meth:`Waker.wake_on_signals` waker (SIG_DFL for SIGCHLD would ignore it altogether)."""


class Waker:
    """A self-pipe: signal handlers call :meth:`wake`; loops :meth:`wait` on it with a timeout.

    Python runs signal handlers between bytecodes, and a ``select`` interrupted by a signal is
    restarted (PEP 475), so without this a loop would only notice a signal when its wait ran out.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        set_nonblocking(self.read_fd)
        set_nonblocking(self.write_fd)
        self._closed = False
        self._wakes_on_signals = False

    def wake(self) -> None:
        """Safe from any thread and from a signal handler: one ``write``, no lock."""
        if self._closed:  # its descriptor numbers may belong to another file by now
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.write_fd, b"x")

    def wake_on_signals(self) -> None:
        """Have every signal this process catches wake :meth:`wait`, whichever thread gets it.

        Python runs handlers in the main thread only, at its next bytecode, and the kernel may hand
        a process-directed signal to any thread that does not block it. A signal delivered to,
        say, the HTTP server's thread does not interrupt the main thread's ``select``, which would
        sleep on until its timeout (``chronod web`` ignored SIGTERM that way). The C-level handler
        writes to the wakeup fd from whatever thread it runs on. Main thread only.

        The Python handlers then need not wake anything: they should only set a flag. A handler
        that does more can be re-entered by a burst of signals (Python runs a pending handler
        between any two bytecodes, its own included) until RecursionError.
        """
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self._wakes_on_signals = True

    def drain(self) -> None:
        read_available(self.read_fd)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds or until woken; True if woken."""
        woken = bool(wait_readable([self.read_fd], timeout))
        if woken:
            self.drain()
        return woken

    def close(self) -> None:
        self._closed = True
        if self._wakes_on_signals:  # before the descriptor number can belong to another file
            with contextlib.suppress(ValueError):  # (not the main thread: nothing to undo there)
                signal.set_wakeup_fd(-1)
        close_quietly(self.read_fd)
        close_quietly(self.write_fd)
