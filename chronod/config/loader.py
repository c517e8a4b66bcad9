"""Reading ``schedules.toml``: the file, its TOML syntax, and every problem in one
:class:`ConfigError`.

Syntax errors are reported as ``FILE:LINE:COL: message`` (in words, by :mod:`chronod.syntax`);
semantic ones, found by :mod:`chronod.config.reader`, as ``FILE: jobs.NAME.key: reason (got
VALUE)``. :func:`load_config` never returns a partially valid config.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from chronod.config.model import Config
from chronod.config.parsers import MAX_DEPTH
from chronod.config.reader import Reader
from chronod.errors import ConfigError, ConfigIssue
from chronod.syntax import explain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

MAX_FILE_BYTES = 64 * 2**20  # 100,000 jobs take about 10 MiB


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem found."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _file_error(file, "no such file") from None
    except IsADirectoryError:
        raise _file_error(file, "is a directory, not a schedules file") from None
    except OSError as exc:
        raise _file_error(file, f"cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // 2**20
        raise _file_error(file, f"larger than {limit} MiB; is this really a schedules file?")
    return parse_config(raw, file)


def _file_error(file: Path, reason: str) -> ConfigError:
    """A problem with the file as a whole: no location inside it, but the absolute path chronod
    looked at (a relative one depends on a working directory the reader may not know) and how to
    point it elsewhere."""
    return ConfigError(
        [
            ConfigIssue(
                file=str(file.absolute()),
                where="",
                message=f"{reason} (give the schedules file with --config PATH or CHRONOD_CONFIG)",
            )
        ]
    )


def parse_config(raw: bytes, file: Path) -> Config:
    name = str(file)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigIssue(file=name, where=f"{line}:1", message="not valid UTF-8", syntax=True)]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = explain(text, exc)
        raise ConfigError([_syntax(name, found.line, found.column, found.message)]) from None
    except RecursionError:
        # The parser recurses once per level of nested arrays and inline tables.
        line, column = _deepest(text, MAX_DEPTH)
        message = f"arrays and inline tables nested more than {MAX_DEPTH} levels deep"
        raise ConfigError([_syntax(name, line, column, message)]) from None
    except ValueError:
        # int() refuses numbers of more than 4300 digits (CVE-2020-10735) inside the parser.
        line, column = _huge_number(text)
        raise ConfigError([_syntax(name, line, column, "number too large")]) from None
    reader = Reader(name)
    config = reader.config(data, file)
    if reader.issues:
        # A bad [defaults] value is found once per job that inherits it; report it once.
        raise ConfigError(list(dict.fromkeys(reader.issues)))
    return config


def _syntax(file: str, line: int, column: int, message: str) -> ConfigIssue:
    return ConfigIssue(file=file, where=f"{line}:{column}", message=message, syntax=True)


def _deepest(text: str, limit: int) -> tuple[int, int]:
    """Where arrays and inline tables first nest deeper than ``limit`` (line, column), skipping
    strings and comments; 1:1 if this rough reading finds no such place."""
    depth, pos, line, line_start = 0, 0, 1, 0
    while pos < len(text):
        char = text[pos]
        if char == "\n":
            line, line_start = line + 1, pos + 1
        elif char == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        elif char in "\"'":
            quote = text[pos : pos + 3] if text.startswith(char * 3, pos) else char
            end = pos + len(quote)
            while end < len(text) and not text.startswith(quote, end):
                if text[end] == "\n" and len(quote) == 1:
                    break  # a string cannot span lines: let the parser report it
                end += 2 if text[end] == "\\" and char == '"' else 1
            line += text.count("\n", pos, end)
            if "\n" in text[pos:end]:
                line_start = text.rfind("\n", pos, end) + 1
            pos = end + len(quote)
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line, pos - line_start + 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        pos += 1
    return 1, 1


def _huge_number(text: str) -> tuple[int, int]:
    match = re.search(r"[0-9_]{4000,}", text)
    if match is None:
        return 1, 1
    start = match.start()
    return text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)
