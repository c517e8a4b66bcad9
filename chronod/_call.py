"""The process a ``call = "package.module:function"`` job runs in: forked from a worker child.

Forking (rather than starting a new interpreter) makes a ``call`` run as cheap to start as a
``command``. The child leaves the worker's world behind before it touches the job's code: its own
session (so a timeout kills its whole tree), default signal handling, stdin from ``/dev/null``,
stdout and stderr into the capture pipe, no inherited descriptors (store connections, the worker's
self-pipe), the run's environment and working directory. It never returns into the worker's code:
every path ends in :func:`os._exit`.

What runs is the job's own definition from the worker's config (``target``, ``args``, ``kwargs``),
never anything from the queue message. Exit status: 0 when the function returns (its return value is
ignored), the code of a ``SystemExit`` it raises, otherwise 1 with the traceback on stderr; the
exception's one-line summary is also written to ``report_fd`` as JSON (``{"error": "..."}``) so the
run record can say what went wrong without parsing the output.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from chronod._proc import FORK_BLOCKED, die_with_parent

EXIT_CALL_FAILED = 1
EXIT_SETUP_FAILED = 126  # as a shell says when it cannot run the command it was given
EXIT_ORPHANED = 125


def resolve(target: str) -> Callable[..., Any]:
    """``"package.module:attr.path"`` → the callable it names (imports the module)."""
    module_name, _, path = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in path.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"{target} is not callable")
    return value  # type: ignore[no-any-return]


def exit_code_for(exc: SystemExit) -> int:
    """What the interpreter itself would exit with for ``exc``."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def child_main(
    *,
    target: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    env: Mapping[str, str],
    cwd: str | None,
    out_fd: int,
    report_fd: int,
    worker_pid: int,
    signal_mask: Iterable[int],
) -> NoReturn:
    """Body of the forked child; called right after ``os.fork()`` returned 0."""
    code = EXIT_SETUP_FAILED
    report = report_fd
    try:
        report = _detach(out_fd, report_fd, worker_pid, signal_mask)
        _enter(env, cwd)
        code = EXIT_CALL_FAILED
        resolve(target)(*args, **kwargs)
        code = 0
    except SystemExit as exc:
        code = exit_code_for(exc)
    except BaseException as exc:
        _report(report, f"{type(exc).__name__}: {exc}".strip().splitlines()[0])
        # Start the traceback at the job's code: the frame of this function is noise to its author.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _detach(out_fd: int, report_fd: int, worker_pid: int, mask: Iterable[int]) -> int:
    """Leave the worker's session, signals and descriptors; returns the report descriptor."""
    os.setsid()
    # The worker may die without finishing this run; the run must not outlive it unsupervised.
    die_with_parent(signal.SIGKILL)
    if os.getppid() != worker_pid:
        os._exit(EXIT_ORPHANED)
    for sig in FORK_BLOCKED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a Python program's usual default
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    report = os.dup2(report_fd, 3) if report_fd != 3 else 3
    os.closerange(4, _max_fd())  # also closes devnull (> 3) and the originals of out/report
    # Fresh streams on 0-2: the worker's sys.stdout/stderr may be wrappers around other files.
    # Both line-buffered, so that the merged capture keeps prints and tracebacks in order.
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout, sys.stderr = (
        open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
        for fd in (1, 2)
    )
    return report


def _enter(env: Mapping[str, str], cwd: str | None) -> None:
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    # PYTHONPATH is read at interpreter start-up; a forked child applies the job's value itself.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in extra if p not in sys.path]


def _report(fd: int, error: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps({"error": error[:1000]}).encode())


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 1024
