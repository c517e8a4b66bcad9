"""TOML syntax errors of ``schedules.toml`` in words a user understands, still ``LINE:COL``.

tomllib (tomli before Python 3.11) stops at the first syntax error with a parser's message:
``Illegal character '\\n'`` for a string that is not closed on its line, ``Invalid value`` for a
duration written without quotes. :func:`explain` says instead what is wrong and how to write it,
and points at the place to fix: the opening quote of a string that is not closed (not the end
of its line), the key that is set twice (not the end of its value).

The parser's messages are matched by their text; one it does not know (another tomllib release
may word things differently) keeps the parser's own words and location.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_LOCATION = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$", re.S
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]")
_KEY_LINE = re.compile(r"""^\s*(?P<key>[A-Za-z0-9_."' -]+?)\s*=""")
_DURATION_LIKE = re.compile(r"^[+-]?\d+(?:ms|[dhms])\w*$")
_DATE_LIKE = re.compile(r"^\d{4}-\d")
_BOOLEAN_LIKE = {"True", "False", "TRUE", "FALSE"}
_SHOWN = 40  # characters of the user's text quoted back in a message
_LOOK_BACK = 200  # lines searched back for the key of a multi-line value


@dataclass(frozen=True, slots=True)
class Syntax:
    """Where the syntax error is (1-based line and column) and what to do about it."""

    line: int
    column: int
    message: str


class _Source:
    """The document and the parser's position, with the questions the explanations ask."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = min(pos, len(text))

    def line_start(self, pos: int) -> int:
        return self.text.rfind("\n", 0, pos) + 1

    def line_text(self, pos: int) -> str:
        start = self.line_start(pos)
        end = self.text.find("\n", start)
        return self.text[start : len(self.text) if end < 0 else end]

    def char(self, pos: int | None = None) -> str:
        at = self.pos if pos is None else pos
        return self.text[at : at + 1]

    def rest_of_line(self) -> str:
        """The text from the position to the end of its line, without a trailing comment."""
        end = self.text.find("\n", self.pos)
        rest = self.text[self.pos : len(self.text) if end < 0 else end]
        return rest.split(" #", 1)[0].strip()

    def opening_quote(self, quote: str, *, same_line: bool = True) -> int:
        """The last unescaped ``quote`` before the position (on its line, or anywhere): where a
        string that is not closed starts (a quote inside it would have closed it)."""
        start = self.line_start(self.pos) if same_line else 0
        at = self.pos
        while (at := self.text.rfind(quote, start, at)) >= 0:
            before = self.text[self.line_start(at) : at]
            backslashes = len(before) - len(before.rstrip("\\"))
            if quote == "'" or backslashes % 2 == 0:
                return at
        return self.pos

    def statement_start(self) -> tuple[int, str | None]:
        """The first character of the key of the statement ending at the position, and the key.

        A value may span lines (an array), so look back for the line that starts with ``key =``.
        """
        at = self.pos
        for _ in range(_LOOK_BACK):
            start = self.line_start(at)
            match = _KEY_LINE.match(self.line_text(start))
            if match is not None:
                return start + match.start("key"), match["key"].strip()
            if start == 0:
                break
            at = start - 1
        return self.line_start(self.pos), None

    def earlier_line(self, until: int, same: Callable[[str], bool]) -> int | None:
        """The number of the last line before offset ``until`` for which ``same`` holds."""
        lines = self.text[: self.line_start(until)].split("\n")
        for number in range(len(lines) - 1, -1, -1):
            if same(lines[number]):
                return number + 1
        return None

    def header_at(self, pos: int) -> str:
        return self.line_text(pos).split("#", 1)[0].strip()


def explain(text: str, error: ValueError) -> Syntax:
    """The syntax error ``error`` raised by tomllib for ``text``, explained and located."""
    raw = str(error)
    match = _LOCATION.match(raw)
    if match is None:
        return Syntax(1, 1, raw)
    if match["line"] is None:
        pos = len(text)
    else:
        line_no, column = int(match["line"]), int(match["col"])
        pos = _offset(text, line_no, column)
    source = _Source(text, pos)
    message = match["msg"]
    for pattern, handler in _RULES:
        found = pattern.fullmatch(message)
        if found is not None:
            at, words = handler(source, found)
            return _located(text, at, words)
    return _located(text, pos, message)


def _offset(text: str, line: int, column: int) -> int:
    start = 0
    for _ in range(line - 1):
        start = text.index("\n", start) + 1
    return start + column - 1


def _located(text: str, pos: int, message: str) -> Syntax:
    pos = min(pos, len(text))
    line = text.count("\n", 0, pos) + 1
    return Syntax(line, pos - (text.rfind("\n", 0, pos) + 1) + 1, message)


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _control(char: str) -> str:
    return f"U+{ord(char):04X}" if char else "a control character"


# -- one explanation per parser message ----------------------------------------------------------

_Explanation = tuple[int, str]


def _illegal_in_basic_string(src: _Source, found: re.Match[str]) -> _Explanation:
    char = _unrepr(found["char"])
    if char in ("\n", "\r"):
        return src.opening_quote('"'), _not_closed_on_its_line('"')
    return src.pos, (
        f"control character {_control(char)} inside a string: write it as an escape "
        f"(\\u{ord(char):04X})"
        if char
        else "control character inside a string"
    )


def _invalid_character(src: _Source, found: re.Match[str]) -> _Explanation:
    char = _unrepr(found["char"])
    if char in ("\n", "\r"):
        return src.opening_quote("'"), _not_closed_on_its_line("'")
    before = src.line_text(src.pos)[: src.pos - src.line_start(src.pos)]
    where = "a comment" if "#" in before else "a string"
    return src.pos, f"control character {_control(char)} in {where}: remove it"


def _unterminated(src: _Source, found: re.Match[str]) -> _Explanation:
    shown = found.groupdict().get("quote")  # the parser's repr of the missing quote: "'"
    quote = shown[1:2] if shown else '"'
    triple = quote * 3
    opened = src.text.rfind(triple)
    if opened >= 0 and src.text.count(triple) % 2 == 1:
        return opened, f"text block not closed: the {triple} here has no closing {triple}"
    at = src.opening_quote(quote, same_line=False)
    if "\n" in src.text[at:]:
        return at, _not_closed_on_its_line(quote)
    return (
        at,
        f"string not closed: the file ends inside the {quote}...{quote} string that starts here",
    )


def _not_closed_on_its_line(quote: str) -> str:
    return (
        f"string not closed: a {quote}...{quote} string must end on the line where it starts "
        f"(add the closing {quote}, or use {quote * 3}...{quote * 3} for text on several lines)"
    )


def _expected_equals(src: _Source, found: re.Match[str]) -> _Explanation:
    start = src.line_start(src.pos)
    key = src.text[start : src.pos].strip()
    if _BARE_KEY.match(src.char()) and key:
        following = src.rest_of_line().split("=", 1)[0].strip()
        return start + src.line_text(start).index(key[0]), (
            f'a key with spaces needs quotes: write "{_shown(f"{key} {following}")}" = ..., '
            "or remove the space"
        )
    if not key:
        return src.pos, "expected a key = value line"
    return src.pos, f"missing '=' after the key '{_shown(key)}': write {_shown(key)} = value"


def _invalid_value(src: _Source, found: re.Match[str]) -> _Explanation:
    value = src.rest_of_line()
    if not value or value.startswith("#"):
        return src.pos, "missing value after '='"
    word = value.split()[0].rstrip(",]}")
    if word in _BOOLEAN_LIKE:
        return src.pos, f"write true or false in lower case (got {word})"
    if _DURATION_LIKE.match(word):
        return src.pos, f'durations are strings: write "{_shown(word)}"'
    if value[0].isalpha() or value[0] in "/.~$@*":
        return src.pos, f'text needs quotes: write "{_shown(value)}"'
    return src.pos, (
        'not a valid value: text goes in quotes ("..."), numbers are written 90, 1.5 or -3, '
        "lists in [ ], tables in { }"
    )


def _after_statement(src: _Source, found: re.Match[str]) -> _Explanation:
    line = src.line_text(src.pos)
    column = src.pos - src.line_start(src.pos)
    if line.lstrip().startswith("["):
        return src.pos, "put each key = value on its own line, below the [table] header"
    key_value = line.split("=", 1)
    if len(key_value) == 2:
        value = key_value[1].split(" #", 1)[0].strip()
        if _DATE_LIKE.match(value):
            return _bad_date(src, found)
        if _DURATION_LIKE.match(value):
            return src.pos, f'durations are strings: write "{_shown(value)}"'
        rest = line[column:].split(" #", 1)[0].strip()
        if not value.startswith(('"', "'", "[", "{")) and rest:
            return src.pos, f'text with spaces needs quotes: write "{_shown(value)}"'
    return src.pos, (
        "unexpected text after the value: one key = value per line "
        '(put text with spaces in quotes, "like this")'
    )


def _bad_date(src: _Source, found: re.Match[str]) -> _Explanation:
    return src.pos, (
        "not a valid date or time: write 2027-01-31, 2027-01-31T08:00:00, "
        "or 2027-01-31T08:00:00Z / +01:00 for an instant"
    )


def _declared_twice(src: _Source, found: re.Match[str]) -> _Explanation:
    start = src.line_start(src.pos)
    header = src.header_at(start)
    normal = header.replace(" ", "")
    first = src.earlier_line(start, lambda line: line.split("#", 1)[0].replace(" ", "") == normal)
    where = f" (first at line {first})" if first else ""
    return start + src.line_text(start).index("["), (
        f"table {header} is defined twice{where}: keep one and merge their keys"
    )


def _overwrite(src: _Source, found: re.Match[str]) -> _Explanation:
    start = src.line_start(src.pos)
    if src.line_text(start).lstrip().startswith("["):
        header = src.header_at(start)
        return start + src.line_text(start).index("["), (
            f"table {header} names a key that already holds a value"
        )
    at, key = src.statement_start()
    if key is None:
        return src.pos, "this key is already set"

    def same_key(line: str) -> bool:
        match = _KEY_LINE.match(line)
        return match is not None and match["key"].strip() == key

    first = _first_in_table(src, at, same_key)
    where = f" (first at line {first})" if first else ""
    return at, f"key '{_shown(key)}' is set twice in this table{where}: keep one"


def _first_in_table(src: _Source, until: int, same: Callable[[str], bool]) -> int | None:
    """The earlier line of the same ``[table]`` for which ``same`` holds."""
    lines = src.text[: src.line_start(until)].split("\n")
    for number in range(len(lines) - 1, -1, -1):
        if lines[number].lstrip().startswith("["):
            return None
        if same(lines[number]):
            return number + 1
    return None


def _frozen(src: _Source, found: re.Match[str]) -> _Explanation:
    at, _ = src.statement_start()
    name = _dotted(found["key"])
    return at, (
        f"{name} was written as an inline table {{...}} or an array, which cannot be extended "
        "later: put this key inside it"
    )


def _redefined(src: _Source, found: re.Match[str]) -> _Explanation:
    at, _ = src.statement_start()
    name = _dotted(found["key"])
    return at, f"[{name}] is already a table of its own: set this key in that table"


def _duplicate_inline_key(src: _Source, found: re.Match[str]) -> _Explanation:
    return src.pos, f"key {found['key']} appears twice in this inline table {{...}}"


def _unclosed_array(src: _Source, found: re.Match[str]) -> _Explanation:
    if not src.char():
        return src.pos, "list not closed: the file ends before its ']'"
    return src.pos, "expected ',' between list items or ']' to close the list"


def _unclosed_inline_table(src: _Source, found: re.Match[str]) -> _Explanation:
    if src.char() in ("\n", "\r", ""):
        return src.pos, (
            "inline table not closed: a { key = value, ... } table must end on the line where "
            "it starts (or use a [table] section)"
        )
    return src.pos, "expected ',' between the keys of the inline table or '}' to close it"


def _header_not_closed(src: _Source, found: re.Match[str]) -> _Explanation:
    close = found["close"]
    before = src.text[src.pos - 1 : src.pos]
    if _BARE_KEY.match(src.char()) and before.isspace():
        return src.pos, (
            f"a table name with spaces needs quotes: write [jobs.\"my job\"]; expected '{close}'"
        )
    return src.pos, f"table header not closed: expected '{close}' (like [jobs.NAME])"


def _bad_key(src: _Source, found: re.Match[str]) -> _Explanation:
    return src.pos, (
        "expected a key name: letters, digits, '_' and '-', anything else in quotes (\"a key\")"
    )


def _bad_statement(src: _Source, found: re.Match[str]) -> _Explanation:
    return src.pos, "expected key = value, a [table] header or a # comment"


def _bad_escape(src: _Source, found: re.Match[str]) -> _Explanation:
    backslash = src.text.rfind("\\", src.line_start(src.pos), src.pos + 1)
    return (src.pos if backslash < 0 else backslash), (
        'unknown escape in a "..." string: write \\\\ for a backslash, or use single quotes, '
        "where backslashes are kept as they are ('C:\\temp', '\\d+')"
    )


def _bad_unicode_escape(src: _Source, found: re.Match[str]) -> _Explanation:
    return src.pos, "bad \\u or \\U escape: \\u takes 4 hex digits, \\U takes 8"


def _unrepr(text: str) -> str:
    """The character that the parser shows as a Python repr (``'\\n'``, ``'\\x00'``)."""
    inner = text[1:-1]
    if inner.startswith("\\"):
        escapes = {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\", "\\'": "'"}
        if inner in escapes:
            return escapes[inner]
        if inner[1:2] in ("x", "u", "U"):
            return chr(int(inner[2:], 16))
    return inner[:1]


def _dotted(key_repr: str) -> str:
    """``('jobs', 'a')`` (how the parser shows a key) as ``jobs.a``."""
    parts = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", key_repr)
    names = [single or double for single, double in parts]
    return ".".join(names) if names else key_repr


_RULES: tuple[tuple[re.Pattern[str], Callable[[_Source, re.Match[str]], _Explanation]], ...] = (
    (re.compile(r"Illegal character (?P<char>'.*'|\".*\")"), _illegal_in_basic_string),
    (re.compile(r"Found invalid character (?P<char>'.*'|\".*\")"), _invalid_character),
    (re.compile(r"Unterminated string"), _unterminated),
    (re.compile(r"Expected (?P<quote>\"'\"|\"'''\")"), _unterminated),
    (re.compile(r"Expected '=' after a key in a key/value pair"), _expected_equals),
    (re.compile(r"Invalid value"), _invalid_value),
    (re.compile(r"Expected newline or end of document after a statement"), _after_statement),
    (re.compile(r"Invalid date or datetime"), _bad_date),
    (re.compile(r"Cannot declare .* twice"), _declared_twice),
    (re.compile(r"Cannot overwrite a value"), _overwrite),
    (re.compile(r"Cannot mutate immutable namespace (?P<key>.*)"), _frozen),
    (re.compile(r"Cannot redefine namespace (?P<key>.*)"), _redefined),
    (re.compile(r"Duplicate inline table key (?P<key>.*)"), _duplicate_inline_key),
    (re.compile(r"Unclosed array"), _unclosed_array),
    (re.compile(r"Unclosed inline table"), _unclosed_inline_table),
    (
        re.compile(r"Expected '(?P<close>\]\]?)' at the end of an? .* declaration"),
        _header_not_closed,
    ),
    (re.compile(r"Invalid initial character for a key part"), _bad_key),
    (re.compile(r"Invalid statement"), _bad_statement),
    (re.compile(r"Unescaped '\\' in a string"), _bad_escape),
    (
        re.compile(r"Invalid hex value|Escaped character is not a Unicode scalar value"),
        _bad_unicode_escape,
    ),
)
