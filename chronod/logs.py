"""Logging: one line per event on stderr, human by default or JSON (``--log-format json``).

Code logs events with :func:`event`, which attaches structured fields. The run events carry the
same ones everywhere: ``job``, ``run_id``, ``slot`` (ISO 8601 UTC), ``attempt``, ``epoch`` (of the
leader that dispatched the run) and ``worker`` (``host:pid``); leadership events carry ``epoch``.

* human: ``2026-11-27T14:30:00.012Z info    chronod.worker: finished job=backup outcome=…``;
  fields as ``key=value``, values with spaces, quotes, ``=`` or line breaks quoted JSON-style, and
  line breaks in the message escaped, so an event is always one line (a traceback follows it).
* JSON: one object per line for journald/ELK: ``ts``, ``level``, ``logger``, ``msg``, ``host``,
  ``pid``, then the fields (``exc`` holds a traceback).

Job output goes to the ``chronod.job`` logger, each line prefixed with ``[RUN_ID]``.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import datetime
from typing import Any, Literal

from chronod.tz import UTC

LogFormat = Literal["human", "json"]
_FIELDS = "chronod_fields"


def event(logger: logging.Logger, level: int, message: str, /, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (None values are dropped)."""
    clean = {k: v for k, v in fields.items() if v is not None}
    logger.log(level, message, extra={_FIELDS: clean})


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, _FIELDS, None)
    return value if isinstance(value, dict) else {}


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = (
            datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        )
        extra = " ".join(f"{k}={_human(v)}" for k, v in fields_of(record).items())
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        text = f"{when} {record.levelname.lower():7} {record.name}: {message}"
        if extra:
            text += f" {extra}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "host": self.host,
            "pid": record.process,
        }
        for key, value in fields_of(record).items():
            # A field never hides the record's own keys (``pid`` is the logging process).
            body[f"{key}_" if key in body else key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


_QUOTE = frozenset(' "=\n\r\t')


def _human(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or _QUOTE & set(text) else text


def configure(fmt: LogFormat = "human", level: int = logging.INFO) -> None:
    """Route chronod's loggers to stderr in ``fmt``; safe to call again (replaces the handler)."""
    root = logging.getLogger("chronod")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else HumanFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
