"""The body of a ``call = "package.module:function"`` run, inside the process the fork server made.

By the time :func:`run` is called, :mod:`chronod._forkserver` has done what every run needs (its
own session, ``PR_SET_PDEATHSIG``, default signal handling, stdin from ``/dev/null``, stdout and
stderr into the capture pipe, the report pipe on descriptor 3, no other inherited descriptor, the
run's working directory) and :func:`enter` has applied the run's environment. What runs is the
job's own definition from the worker's config (``target``, ``args``, ``kwargs``), never anything
from the queue message.

Exit status: 0 when the function returns (its return value is ignored), the code of a
``SystemExit`` it raises, otherwise 1 with the traceback on stderr; the exception's one-line
summary is also written to the report descriptor as JSON (``{"error": "..."}``) so the run record
can say what went wrong without parsing the output.

This module is imported by the fork server, which must stay small: standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

EXIT_CALL_FAILED = 1
EXIT_ORPHANED = 125  # its fork server died before the run was tied to it
REPORT_FD = 3


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


def enter(env: Mapping[str, str], *, streams: bool = True) -> None:
    """Take the run's environment, and (unless :func:`rehearse` made them) fresh standard streams
    on descriptors 0-2."""
    _apply_environment(env)
    # PYTHONPATH is read at interpreter start-up; a forked run applies the job's value itself.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [p for p in extra if p not in sys.path]
    if streams:
        _open_streams()


def rehearse(env: Mapping[str, str]) -> None:
    """In a spare, before its request: what :func:`enter` does that does not depend on the run.

    Each is work the first touch makes expensive in a fresh fork (every page written is copied
    from the server's), done here so that the run's own :func:`enter` finds it done: the standard
    streams, made over a pipe as the run's capture pipe will be (so they behave alike: not
    seekable, the same buffer), which the spare then puts on 1 and 2 in its place; and the
    environment set to ``env``, the previous run's, whose names a next run mostly shares (so
    :func:`enter` changes a few values rather than adding and removing names)."""
    _apply_environment(env)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(read)
    os.close(write)
    _open_streams()


def _open_streams() -> None:
    # The fork server's sys.stdout/stderr write to the worker's log. Both line-buffered, so that
    # the merged capture keeps prints and tracebacks in order.
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout, sys.stderr = (
        open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
        for fd in (1, 2)
    )


def _apply_environment(env: Mapping[str, str]) -> None:
    """Make ``os.environ`` (and the C environment) exactly ``env``.

    Only the differences are applied: a run's environment is mostly the fork server's own (the
    worker's), and clearing and refilling it costs every run one ``unsetenv`` and one ``putenv``
    per variable, each of them writing to pages the fork shares with the server (~0.3 ms a run).
    """
    current = os.environ
    for name in [name for name in current if name not in env]:
        del current[name]
    for name, value in env.items():
        if current.get(name) != value:
            current[name] = value


def run(target: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """Call ``target(*args, **kwargs)``; the exit code of the run (see the module docstring)."""
    code = EXIT_CALL_FAILED
    try:
        resolve(target)(*args, **kwargs)
        code = 0
    except SystemExit as exc:
        code = exit_code_for(exc)
    except BaseException as exc:
        _report(f"{type(exc).__name__}: {exc}".strip().splitlines()[0])
        # Start the traceback at the job's code: the frame of this function is noise to its author.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    return code


def _report(error: str) -> None:
    with contextlib.suppress(OSError):
        os.write(REPORT_FD, json.dumps({"error": error[:1000]}).encode())
