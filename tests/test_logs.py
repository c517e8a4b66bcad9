"""The two log formats: one line per event, structured fields, human by default or JSON."""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Iterator

import pytest

from chronod.logs import HumanFormatter, JSONFormatter, configure, event, fields_of

CREATED = 1_795_789_800.0123  # 2026-11-27T14:30:00.0123Z


def record(message: str, level: int = logging.INFO, /, **fields: object) -> logging.LogRecord:
    """The record :func:`event` would produce, at a fixed instant."""
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            captured.append(rec)

    logger = logging.getLogger(f"chronod.test-logs.{id(captured)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Keep())
    event(logger, level, message, **fields)
    [rec] = captured
    rec.created = CREATED
    rec.name = "chronod.worker"
    return rec


RUN_FIELDS: dict[str, object] = {
    "job": "backup",
    "run_id": "backup@2026-11-27T14:30:00Z",
    "slot": "2026-11-27T14:30:00Z",
    "attempt": 1,
    "epoch": 7,
}


def test_human_line() -> None:
    rec = record("finished", outcome="succeeded", duration=0.25, error=None, **RUN_FIELDS)
    assert HumanFormatter().format(rec) == (
        "2026-11-27T14:30:00.012Z info    chronod.worker: finished outcome=succeeded "
        "duration=0.25 job=backup run_id=backup@2026-11-27T14:30:00Z slot=2026-11-27T14:30:00Z "
        "attempt=1 epoch=7"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("é", "é"),
    ],
)
def test_human_values_that_would_break_key_value_parsing_are_quoted(value: str, shown: str) -> None:
    line = HumanFormatter().format(record("x", error=value))
    assert line.endswith(f" error={shown}")


def test_human_message_stays_on_one_line() -> None:
    line = HumanFormatter().format(record("first\nsecond\r\nthird"))
    assert "\n" not in line
    assert line.endswith("chronod.worker: first\\nsecond\\r\\nthird")


def test_human_traceback_follows_the_event_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("crashed", logging.ERROR)
        rec.exc_info = sys.exc_info()
    first, *rest = HumanFormatter().format(rec).split("\n")
    assert first.endswith("error   chronod.worker: crashed")
    assert rest[-1] == "ValueError: boom"


def test_json_line() -> None:
    rec = record("started", job_pid=42, late_ms=3.5, error=None, **RUN_FIELDS)
    body = json.loads(JSONFormatter().format(rec))
    assert body == {
        "ts": "2026-11-27T14:30:00.012300Z",
        "level": "info",
        "logger": "chronod.worker",
        "msg": "started",
        "host": socket.gethostname(),
        "pid": rec.process,
        "job_pid": 42,
        "late_ms": 3.5,
        **RUN_FIELDS,
    }  # None values (error) are dropped


def test_json_fields_never_hide_the_records_own_keys() -> None:
    body = json.loads(JSONFormatter().format(record("x", pid=1, msg="field", job="a")))
    assert (body["pid"], body["pid_"]) == (record("x").process, 1)
    assert (body["msg"], body["msg_"], body["job"]) == ("x", "field", "a")


def test_json_keeps_unicode_and_non_json_values_readable() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    line = JSONFormatter().format(record("café", thing=Odd()))
    assert "\n" not in line
    body = json.loads(line)
    assert (body["msg"], body["thing"]) == ("café", "odd")
    assert "café" in line  # not \u-escaped: journald and humans read it


def test_json_exception() -> None:
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        rec = record("crashed", logging.ERROR)
        rec.exc_info = sys.exc_info()
    line = JSONFormatter().format(rec)
    assert "\n" not in line
    assert json.loads(line)["exc"].endswith("RuntimeError: bad")


def test_fields_of_a_foreign_record_is_empty() -> None:
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert fields_of(plain) == {}


@pytest.fixture
def restore_chronod_logger() -> Iterator[None]:
    root = logging.getLogger("chronod")
    state = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = state[0]
    root.setLevel(state[1])
    root.propagate = state[2]


@pytest.mark.usefixtures("restore_chronod_logger")
@pytest.mark.parametrize("fmt", ["human", "json"])
def test_configure_routes_chronod_loggers_to_stderr(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("json" if fmt == "json" else "human")
    configure("json" if fmt == "json" else "human")  # again: replaces, never duplicates
    event(logging.getLogger("chronod.job"), logging.INFO, "[job@2026-11-27T14:30:00Z] output")
    logging.getLogger("chronod.daemon").debug("not shown at the default level")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    if fmt == "json":
        assert json.loads(err[0])["msg"] == "[job@2026-11-27T14:30:00Z] output"
    else:
        assert err[0].endswith("info    chronod.job: [job@2026-11-27T14:30:00Z] output")
