"""TOML syntax errors, explained: one row per parser message a user is likely to meet.

Each row is a small file, the ``LINE:COL`` chronod points at (where to fix it, not where the
parser gave up) and a part of the message. Every row must also be an error tomllib reports with
another, terser message, so a row cannot pass by accident.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chronod.config import load_config
from chronod.errors import ConfigError
from chronod.syntax import explain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

ROWS = [
    # A "..." string not closed on its line: at its opening quote, not at the end of the line.
    ('command = "echo hi\n', "1:11", 'string not closed: a "..." string must end on the line'),
    ("command = 'echo hi\nx = 'y'\n", "1:11", "string not closed: a '...' string must end"),
    ("command = 'echo hi\n", "1:11", "string not closed: a '...' string must end"),
    ('a = 1\ncommand = "echo', "2:11", "the file ends inside the"),
    ('a = 1\ncommand = """echo\nmore\n', "2:11", 'text block not closed: the """ here'),
    ('args = ["a", "b\n', "1:14", "string not closed"),
    # key = value
    ('[jobs.a]\ncron "0 9 * * *"\n', "2:6", "missing '=' after the key 'cron'"),
    ("[jobs.a]\nmy key = 1\n", "2:1", 'a key with spaces needs quotes: write "my key"'),
    ("retries =\n", "1:10", "missing value after '='"),
    ("command = echo hi\n", "1:11", 'text needs quotes: write "echo hi"'),
    ("overlap = skip\n", "1:11", 'text needs quotes: write "skip"'),
    ("flag = True\n", "1:8", "write true or false in lower case"),
    ("timeout = 10m\n", "1:13", 'durations are strings: write "10m"'),
    ("every = 1h30m\n", "1:10", 'durations are strings: write "1h30m"'),
    ('description = "a" b\n', "1:19", "unexpected text after the value"),
    ("start = 2027-13-01\n", "1:13", "not a valid date or time"),
    ("start = 2027-02-30\n", "1:9", "not a valid date or time"),
    # tables and keys defined twice
    (
        "[jobs.a]\nx = 1\n[jobs.b]\ny = 1\n[jobs.a]\nz = 1\n",
        "5:1",
        "table [jobs.a] is defined twice (first at line 1)",
    ),
    (
        '[jobs.a]\nretries = 1\ncommand = "x"\nretries = 2\n',
        "4:1",
        "key 'retries' is set twice in this table (first at line 2)",
    ),
    ("[jobs.a]\nargs = [1]\nargs = [\n 1,\n]\n", "3:1", "key 'args' is set twice"),
    ("jobs = 1\n[jobs]\n", "2:1", "table [jobs] names a key that already holds a value"),
    ('env = { A = "1", A = "2" }\n', "1:25", "key 'A' appears twice in this inline table"),
    (
        '[jobs.a]\nenv = { A = "1" }\nenv.B = "2"\n',
        "3:1",
        "jobs.a.env was written as an inline table",
    ),
    (
        '[jobs.a.env]\nA = "1"\n[jobs]\na.env.B = "2"\n',
        "4:1",
        "[jobs.a.env] is already a table of its own",
    ),
    # brackets
    ('args = ["a" "b"]\n', "1:13", "expected ',' between list items or ']'"),
    ('args = ["a",\n "b"\n', "3:1", "list not closed: the file ends before its ']'"),
    ('env = { A = "1"\nB = 2\n', "1:16", "inline table not closed"),
    ('env = { A = "1" B = "2" }\n', "1:17", "expected ',' between the keys of the inline table"),
    ("[jobs.a\nx = 1\n", "1:8", "table header not closed: expected ']'"),
    (
        "[jobs.my job]\nx = 1\n",
        "1:10",
        'a table name with spaces needs quotes: write [jobs."my job"]',
    ),
    ("[[jobs.a]\n", "1:9", "table header not closed: expected ']]'"),
    ("[jobs.a] x = 1\n", "1:10", "put each key = value on its own line"),
    ("[jobs.]\n", "1:7", "expected a key name"),
    ("}\n", "1:1", "expected key = value, a [table] header or a # comment"),
    # escapes and control characters
    ('cwd = "C:\\data"\n', "1:10", 'unknown escape in a "..." string: write \\\\ for a backslash'),
    ('x = "\\u12"\n', "1:8", "bad \\u or \\U escape"),
    ('x = "a\x01b"\n', "1:7", "control character U+0001 inside a string"),
    ("# note \x01\n", "1:8", "control character U+0001 in a comment"),
]


@pytest.mark.parametrize(("text", "where", "message"), ROWS, ids=[r[2][:40] for r in ROWS])
def test_syntax_errors_are_explained_and_located(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    with pytest.raises(tomllib.TOMLDecodeError) as parsed:
        tomllib.loads(text)
    assert message not in str(parsed.value)  # chronod's words, not the parser's
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert issue.format().startswith(f"{path}:{where}: "), issue.format()
    assert message in issue.message


def test_an_unknown_parser_message_keeps_its_words() -> None:
    found = explain("a = 1\nb = 2\n", ValueError("Something new (at line 2, column 3)"))
    assert (found.line, found.column, found.message) == (2, 3, "Something new")
    unlocated = explain("a = 1\n", ValueError("no location at all"))
    assert (unlocated.line, unlocated.column, unlocated.message) == (1, 1, "no location at all")


def test_arrays_nested_too_deep_for_the_parser(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text('# deep\nargs = ["[", ' + "[" * 5000 + "]" * 5000 + "]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = info.value.issues
    # The string "[" does not count; the 33rd bracket of the value does.
    assert (
        issue.format() == f"{path}:2:45: arrays and inline tables nested more than 32 levels deep"
    )


def test_a_number_too_long_for_python(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text("[jobs.a]\nretries = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [i.format() for i in info.value.issues] == [f"{path}:2:11: number too large"]
