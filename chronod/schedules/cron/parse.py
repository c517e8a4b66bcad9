"""Reading a cron expression: croniter's syntax, and the refusal of what croniter misreads.

The fields are read twice: here, by the rules of cron, and by croniter's own expansion
(:func:`read`). Matching then uses croniter's expansion, so every expression accepted is one
the two readings agree on.

Refused at load time, each with its own message (croniter accepts most of these and then reads
something else, or the expression could never fire):

* anything but five fields (croniter reads a sixth and seventh as seconds and years), unknown
  ``@`` shortcuts;
* ``?`` (croniter reads it as ``*``), ``W`` (nearest weekday), ``H``/``R`` (hashed, random);
* malformed items, empty list items, unknown names, values outside the field, a step of 0;
* ranges with equal ends: ``5-5``, ``jan-jan``, ``7-7``, ``7-0``, ``31-L`` (croniter expands them
  to the whole field);
* ``*`` inside a list, ``*,5`` (croniter keeps the ``*`` next to the values, or drops ``#`` rules);
* a step as large as the field's cycle (``*/60``, ``*/24``, ``*/31``, ``*/12``, ``*/7``): cron
  steps restart every hour/day/month/year/week, so ``*/90`` would be minute 0 only;
* a step on a wrap-around range, ``50-10/7`` (croniter restarts the step off by one);
* ``7/n`` in day-of-week (croniter reads ``7/2`` as ``0,2,4,6``), ranges with ``#``
  (``mon-wed#2``), ``#n`` outside 1-5, a bare ``L`` in day-of-week;
* ``L<d>`` or ``d#n`` mixed with plain weekdays (``0,L0``: croniter keeps only ``L0``), and
  ``L<d>``/``d#n`` with a day-of-month other than ``*`` (croniter requires both, not either);
* ``L`` outside day-of-month and day-of-week, as a range start, or with a step of its own;
  ``L`` together with 30 other days (``L,2-31``: croniter reads it as every day);
* day-of-month values none of which exists in the selected months (``0 0 30 2 *``,
  ``0 0 31 4,6 *``; 29 February is fine), even when day-of-week could still match, and any day
  rule that no date satisfies;
* as a safety net, any field that croniter expands differently from this module's own reading.

(Day rules that no date satisfies are found on the tables: :mod:`chronod.schedules.cron.tables`.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from croniter import croniter

from chronod.errors import ScheduleError

MINUTE, HOUR, DOM, MONTH, DOW = range(5)
FIELD_NAMES: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Values a field may be written with (day-of-week admits 7 = Sunday) and the length of its cycle.
_LIMITS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CYCLE: Final = (60, 24, 31, 12, 7)
# Largest value croniter expands "N/step" up to: for day-of-week it stops at 6, not 7.
_STEP_END: Final = (59, 23, 31, 12, 6)

MONTH_NAMES: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBR: Final = tuple(name[:3].lower() for name in MONTH_NAMES)
DAY_NAMES: Final = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DOW_ABBR: Final = tuple(name[:3].lower() for name in DAY_NAMES)

ALIASES: Final = MappingProxyType(
    {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
)

LAST: Final = 0  # the "n" of an L<d> rule in (weekday, n) pairs; #n rules use 1-5

_FIELD_SPLIT: Final = re.compile(r"\S+", re.ASCII)  # croniter's own field separator
_ITEM: Final = re.compile(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\w+))?", re.ASCII)
_HASHED: Final = re.compile(r"[hr](?:\(\d+-\d+\))?(?:/\d+)?", re.ASCII)
_NEAREST_WEEKDAY: Final = re.compile(r"\d+w|w\d+|lw|wl", re.ASCII)
_LAST_WEEKDAY: Final = re.compile(r"l(\w+)", re.ASCII)
_NTH_WEEKDAY: Final = re.compile(r"(\w+)#(\w*)", re.ASCII)


@dataclass(frozen=True, slots=True)
class _Field:
    """One field as this module reads it (independently of croniter, to catch its misreadings)."""

    values: frozenset[int]  # day-of-week: 0-6, Sunday = 0
    last_day: bool = False  # day-of-month L
    nth: frozenset[tuple[int, int]] = frozenset()  # day-of-week (weekday, n); n = LAST for L<d>


def split(expression: str) -> tuple[str, ...]:
    text = expression.strip().lower()
    if not text:
        raise ScheduleError("empty cron expression")
    if text.startswith("@"):
        if text not in ALIASES:
            raise ScheduleError(
                "unknown shortcut; use @yearly, @annually, @monthly, @weekly, @daily, "
                "@midnight or @hourly"
            )
        text = ALIASES[text]
    fields = tuple(_FIELD_SPLIT.findall(text))
    if len(fields) != 5:
        extra = " (seconds and years fields are not supported)" if len(fields) in (6, 7) else ""
        raise ScheduleError(
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}{extra}"
        )
    return fields


def _value(index: int, word: str) -> int:
    """A number or name of field ``index``, range-checked against what the field admits."""
    name = FIELD_NAMES[index]
    if word.isdigit():
        number = int(word)
    elif index == MONTH and word in _MONTH_ABBR:
        number = _MONTH_ABBR.index(word) + 1
    elif index == DOW and word in _DOW_ABBR:
        number = _DOW_ABBR.index(word)
    elif word == "l":
        raise ScheduleError(
            "'L' is only allowed in day-of-month (alone or ending a range, like '25-L') "
            "and in day-of-week as 'L<weekday>' (e.g. 'L0' = last Sunday)"
        )
    else:
        raise ScheduleError(f"{name} field: unknown value '{word}'")
    low, high = _LIMITS[index]
    if not low <= number <= high:
        raise ScheduleError(f"{name} field: {number} is out of range ({low}-{high})")
    return number


def _step(index: int, word: str) -> int:
    name = FIELD_NAMES[index]
    if not word.isdigit():
        raise ScheduleError(f"{name} field: step '{word}' is not a number")
    step = int(word)
    if step == 0:
        raise ScheduleError(f"{name} field: a step must be at least 1")
    if step >= _CYCLE[index]:
        period = ("hour", "day", "month", "year", "week")[index]
        raise ScheduleError(
            f"{name} field: step {step} does not fit the field; cron steps restart every "
            f"{period} (for a fixed period use an interval schedule, 'every')"
        )
    return step


@dataclass(slots=True)
class _FieldBuilder:
    values: set[int] = field(default_factory=set)
    last_day: bool = False
    nth: set[tuple[int, int]] = field(default_factory=set)


def _parse_special(index: int, item: str, into: _FieldBuilder) -> bool:
    """Handle (or refuse) the items that are not numbers, names, ranges or steps."""
    name = FIELD_NAMES[index]
    if item == "?":
        raise ScheduleError("'?' is not supported; use '*'")
    if _HASHED.fullmatch(item):
        raise ScheduleError(f"{name} field: hashed or random values ('H', 'R') are not supported")
    if index == DOM:
        if item == "l":
            into.last_day = True
            return True
        if _NEAREST_WEEKDAY.fullmatch(item):
            raise ScheduleError("'W' (nearest weekday) is not supported")
    if index != DOW:
        return False
    if item == "l":
        raise ScheduleError("day-of-week 'L' needs a weekday, e.g. 'L5' = last Friday")
    if (match := _LAST_WEEKDAY.fullmatch(item)) and match[1].isdigit():
        into.nth.add((_value(DOW, match[1]) % 7, LAST))
        return True
    if match := _NTH_WEEKDAY.fullmatch(item):
        if not match[2].isdigit() or not 1 <= int(match[2]) <= 5:
            raise ScheduleError("day-of-week '#n' needs n from 1 to 5 (e.g. '1#2')")
        into.nth.add((_value(DOW, match[1]) % 7, int(match[2])))
        return True
    if "#" in item:
        raise ScheduleError("day-of-week '#' takes a single weekday (e.g. '1#2', not a range)")
    return False


def _item_values(index: int, item: str) -> list[int]:
    """The values of a number, name, ``*``, range or step item (day-of-week 7 not yet folded)."""
    name = FIELD_NAMES[index]
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ScheduleError(f"{name} field: cannot read '{item}'")
    star, start_word, end_word, step_word = match.groups()
    step = 1 if step_word is None else _step(index, step_word)
    low, high = _LIMITS[index]
    if star:
        return list(range(low, _STEP_END[index] + 1, step))
    start = _value(index, start_word)
    if end_word is None:
        if step_word is None:
            return [start]
        if index == DOW and start == 7:
            raise ScheduleError("day-of-week field: write 0, not 7, to start a step at Sunday")
        return list(range(start, _STEP_END[index] + 1, step))
    end = high if index == DOM and end_word == "l" else _value(index, end_word)
    if start == end or (index == DOW and start == 7 and end == 0):
        raise ScheduleError(
            f"{name} field: range '{item}' has equal ends (croniter reads that as the whole "
            f"field); write the single value"
        )
    if index == DOW and start == 7:
        start = 0  # Sunday; as an end, 7 stays 7 so that 1-7 is Monday to Sunday
    if start < end:
        return list(range(start, end + 1, step))
    if step_word is not None:
        raise ScheduleError(
            f"{name} field: a step on a wrap-around range ('{item}') is not supported; "
            f"list the values"
        )
    # Wrap-around: up to the top of the field, then on from its bottom.
    return [*range(start, (6 if index == DOW else high) + 1), *range(low, end + 1)]


def _parse_field(index: int, text: str) -> _Field:
    items = text.split(",")
    into = _FieldBuilder()
    for item in items:
        if not item:
            raise ScheduleError(f"{FIELD_NAMES[index]} field has an empty list item")
        if item == "*" and len(items) > 1:
            raise ScheduleError(f"{FIELD_NAMES[index]} field: '*' cannot be part of a list")
        if not _parse_special(index, item, into):
            values = _item_values(index, item)
            into.values.update([value % 7 for value in values] if index == DOW else values)
    if into.nth and into.values:
        raise ScheduleError(
            "day-of-week cannot mix plain weekdays with 'L' or '#' entries "
            "(croniter would ignore the plain ones)"
        )
    return _Field(frozenset(into.values), into.last_day, frozenset(into.nth))


def _check_day_fields(texts: tuple[str, ...], parsed: tuple[_Field, ...]) -> None:
    if parsed[DOM].last_day and len(parsed[DOM].values) == 30:
        # croniter counts 'L' as a 31st value and collapses the field to '*' (every day).
        raise ScheduleError(
            "day-of-month field: 'L' together with 30 other days is read by croniter as "
            "every day; leave out 'L' or the days it already covers"
        )
    if parsed[DOW].nth and texts[DOM] != "*":
        raise ScheduleError(
            "day-of-month must be '*' when day-of-week uses 'L' or '#' "
            "(croniter would require both instead of either)"
        )


Expanded = tuple[
    tuple[int, ...],  # minutes
    tuple[int, ...],  # hours
    tuple[int, ...],  # days of month, numeric
    bool,  # day-of-month L
    frozenset[int],  # months
    tuple[int, ...],  # weekdays, Sunday = 0
    tuple[tuple[int, int], ...],  # (weekday, n) with n = LAST for L<d>
]


def _croniter_expand(text: str) -> Expanded:
    try:
        fields, nth_map = croniter.expand(text)
    except Exception as exc:  # croniter raises ValueError subclasses and, on odd input, others
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ScheduleError(f"croniter cannot read this expression: {first_line}") from None

    def numbers(index: int) -> tuple[int, ...]:
        field = fields[index]
        if field == ["*"]:
            low, high = _LIMITS[index]
            return tuple(range(low, min(high, _STEP_END[index]) + 1))
        return tuple(sorted(v for v in field if isinstance(v, int)))

    nth: list[tuple[int, int]] = []
    for weekday, ns in nth_map.items():
        nth.extend((int(weekday) % 7, LAST if n == "l" else int(n)) for n in ns)
    dow = () if nth else numbers(DOW)
    return (
        numbers(MINUTE),
        numbers(HOUR),
        numbers(DOM),
        "l" in fields[DOM],
        frozenset(numbers(MONTH)),
        tuple(sorted({d % 7 for d in dow})),
        tuple(sorted(nth)),
    )


def _cross_check(texts: tuple[str, ...], parsed: tuple[_Field, ...], expanded: Expanded) -> None:
    """Refuse what croniter expands differently from the rules above (its silent misreadings)."""
    minutes, hours, dom, last_day, months, dow, nth = expanded
    ours: list[tuple[object, object]] = [
        (parsed[MINUTE].values, frozenset(minutes)),
        (parsed[HOUR].values, frozenset(hours)),
        ((parsed[DOM].values, parsed[DOM].last_day), (frozenset(dom), last_day)),
        (parsed[MONTH].values, months),
        (parsed[DOW].values if not parsed[DOW].nth else frozenset(), frozenset(dow)),
    ]
    for index, (mine, theirs) in enumerate(ours):
        if mine != theirs:
            raise ScheduleError(
                f"{FIELD_NAMES[index]} field: croniter reads '{texts[index]}' differently "
                f"from cron; write the values as a plain list"
            )
    if parsed[DOW].nth != frozenset(nth):
        raise ScheduleError(
            f"day-of-week field: croniter reads '{texts[DOW]}' differently from cron; "
            f"write one 'L<d>' or 'd#n' entry per weekday"
        )


def read(fields_text: tuple[str, ...]) -> Expanded:
    """The five fields of an expression (:func:`split`) as croniter expands them, once they are
    proven to mean what cron means; raise :class:`ScheduleError` saying what is wrong."""
    parsed = tuple(_parse_field(i, text) for i, text in enumerate(fields_text))
    _check_day_fields(fields_text, parsed)
    expanded = _croniter_expand(" ".join(fields_text))
    _cross_check(fields_text, parsed, expanded)
    return expanded
