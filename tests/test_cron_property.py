"""Cron schedules against the brute-force reference and against croniter, on generated expressions.

Expressions are generated together with their meaning (value sets computed here from the rules, not
by the parser under test), so these tests cover parsing, day matching and the DST rule at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from croniter import croniter
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from chronod.errors import ScheduleError
from chronod.schedules.cron import CronSchedule
from chronod.tz import Zone, get_zone
from tests.cron_reference import LAST, CronSpec, RefFire, reference_fires

UTC = timezone.utc
ZONES = (
    "America/New_York",
    "Europe/London",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Asia/Kolkata",  # the last two have no DST
    "UTC",
)
MINUTE, HOUR, DOM, MONTH, DOW = range(5)
LIMITS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
CYCLE = (60, 24, 31, 12, 7)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Values worth hitting often: DST transitions happen at 00:00-03:45 local in the zones above.
FAVOURITES = (
    (0, 15, 30, 45, 59, 1),
    (0, 1, 2, 3, 23),
    (1, 15, 28, 29, 30, 31),
    (2, 3, 4, 9, 10, 11),
    (0, 5, 6),
)
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass(frozen=True)
class FieldDraw:
    text: str
    values: frozenset[int]
    last_day: bool = False
    nth: frozenset[tuple[int, int]] = field(default_factory=frozenset)


def _spell(index: int, value: int, draw: st.DrawFn, *, seven: bool = True) -> str:
    """A value as a number or (month/day-of-week) a name; Sunday sometimes as 7."""
    if index == MONTH and draw(st.booleans()):
        return MONTHS[value - 1].upper() if draw(st.booleans()) else MONTHS[value - 1]
    if index == DOW:
        if draw(st.booleans()):
            return WEEKDAYS[value]
        if value == 0 and seven and draw(st.booleans()):
            return "7"
    return str(value)


@st.composite
def _value(draw: st.DrawFn, index: int) -> int:
    low, high = LIMITS[index]
    if draw(st.booleans()):
        return draw(st.sampled_from([v for v in FAVOURITES[index] if low <= v <= high]))
    return draw(st.integers(low, high))


@st.composite
def _item(draw: st.DrawFn, index: int) -> FieldDraw:
    """One list item: value, range, stepped range, start/step or wrap-around range."""
    low, high = LIMITS[index]
    kind = draw(st.sampled_from(["value", "value", "range", "range-step", "start-step", "wrap"]))
    if index == DOM and draw(st.integers(0, 5)) == 0:
        if draw(st.booleans()):
            return FieldDraw("L", frozenset(), last_day=True)
        start = draw(st.integers(20, 30))
        return FieldDraw(f"{start}-L", frozenset(range(start, 32)))
    if kind == "value":
        value = draw(_value(index))
        return FieldDraw(_spell(index, value, draw), frozenset([value]))
    if kind in ("range", "range-step"):
        start = draw(st.integers(low, high - 1))
        end = draw(st.integers(start + 1, high + (1 if index == DOW else 0)))  # DOW may end at 7
        step = draw(st.integers(1, CYCLE[index] - 1)) if kind == "range-step" else 1
        values = frozenset(v % 7 if index == DOW else v for v in range(start, end + 1, step))
        end_text = "7" if index == DOW and end == 7 else _spell(index, end, draw)
        text = f"{_spell(index, start, draw, seven=end != 7)}-{end_text}"
        return FieldDraw(text + (f"/{step}" if kind == "range-step" else ""), values)
    if kind == "start-step":
        start = draw(st.integers(low, high))
        step = draw(st.integers(1, CYCLE[index] - 1))
        text = f"{_spell(index, start, draw, seven=False)}/{step}"
        return FieldDraw(text, frozenset(range(start, high + 1, step)))
    start = draw(st.integers(low + 1, high))
    end = draw(st.integers(low, start - 1))
    values = frozenset([*range(start, high + 1), *range(low, end + 1)])
    return FieldDraw(f"{_spell(index, start, draw)}-{_spell(index, end, draw)}", values)


@st.composite
def plain_field(draw: st.DrawFn, index: int, star: int = 20, star_step: int = 15) -> FieldDraw:
    """``*`` with probability ``star`` %, ``*/n`` with ``star_step`` %, else a list of items."""
    low, high = LIMITS[index]
    roll = draw(st.integers(1, 100))
    if 30 < roll <= 30 + star:
        return FieldDraw("*", frozenset(range(low, high + 1)))
    if 30 + star < roll <= 30 + star + star_step:
        step = draw(st.integers(1, CYCLE[index] - 1))
        return FieldDraw(f"*/{step}", frozenset(range(low, high + 1, step)))
    items = draw(st.lists(_item(index), min_size=1, max_size=3))
    return FieldDraw(
        ",".join(i.text for i in items),
        frozenset().union(*(i.values for i in items)),
        last_day=any(i.last_day for i in items),
    )


@st.composite
def nth_field(draw: st.DrawFn) -> FieldDraw:
    texts: list[str] = []
    rules: set[tuple[int, int]] = set()
    for _ in range(draw(st.integers(1, 3))):
        weekday = draw(st.integers(0, 6))
        if draw(st.booleans()):
            texts.append(f"L{7 if weekday == 0 and draw(st.booleans()) else weekday}")
            rules.add((weekday, LAST))
        else:
            n = draw(st.integers(1, 5))
            texts.append(f"{_spell(DOW, weekday, draw)}#{n}")
            rules.add((weekday, n))
    return FieldDraw(",".join(texts), frozenset(), nth=frozenset(rules))


@dataclass(frozen=True)
class Generated:
    text: str
    spec: CronSpec


@st.composite
def expressions(draw: st.DrawFn, profile: str = "generic") -> Generated:
    """Expressions of a profile: generic, dst (most days, early hours), sparse or croniter."""
    minute = draw(plain_field(MINUTE))
    if profile == "dst":
        hours = draw(st.lists(st.sampled_from([0, 1, 2, 3, 23]), min_size=1, max_size=3))
        hour = FieldDraw(",".join(map(str, hours)), frozenset(hours))
        if draw(st.integers(1, 4)) == 3:
            hour = draw(plain_field(HOUR, star=35, star_step=35))
    else:
        hour = draw(plain_field(HOUR))
    day_star = {"generic": 45, "dst": 65, "sparse": 10, "croniter": 45}[profile]
    month_star = {"generic": 75, "dst": 70, "sparse": 0, "croniter": 75}[profile]
    month = draw(plain_field(MONTH, star=month_star, star_step=5))
    if profile == "dst" and draw(st.integers(1, 5)) != 3:
        month = FieldDraw("*", frozenset(range(1, 13)))
    if draw(st.integers(1, 5 if profile == "dst" else 4)) == 3:
        dom = FieldDraw("*", frozenset(range(1, 32)))
        dow = draw(nth_field())
    else:
        dom = draw(plain_field(DOM, star=day_star))
        dow = draw(plain_field(DOW, star=day_star))
        if profile == "dst" and draw(st.booleans()):
            # Most transitions happen on a Sunday (Santiago's on a Saturday night).
            dom = FieldDraw("*", frozenset(range(1, 32)))
            dow = FieldDraw("sat,0", frozenset([0, 6]))
        both_restricted = dom.text != "*" and dow.text != "*"
        if profile == "croniter" and both_restricted and "*" in dom.text[0] + dow.text[0]:
            # croniter ORs the day fields whenever both are restricted; cron only when neither
            # starts with '*' (e.g. '*/2' with '1' is "both" in cron, "either" in croniter).
            dow = FieldDraw("*", frozenset(range(7)))
    spec = CronSpec(
        minutes=minute.values,
        hours=hour.values,
        days=dom.values,
        last_day=dom.last_day,
        months=month.values,
        weekdays=dow.values,
        nth=dow.nth,
        dom_starts_with_star=dom.text.startswith("*"),
        dow_starts_with_star=dow.text.startswith("*"),
        fixed_time=not (minute.text.startswith("*") or hour.text.startswith("*")),
    )
    text = " ".join(f.text for f in (minute, hour, dom, month, dow))
    return Generated(text, spec)


def _transitions(zone: Zone) -> list[datetime]:
    """The zone's offset changes in 2020-2035."""
    found: list[datetime] = []
    current = zone.next_transition(datetime(2020, 1, 1, tzinfo=UTC))
    while current is not None and current.year <= 2035:
        found.append(current)
        current = zone.next_transition(current)
    return found


@st.composite
def precise(draw: st.DrawFn, instant: datetime) -> datetime:
    """Whole minutes (so `after` can equal a fire), whole seconds, or a stray microsecond."""
    precision = draw(st.sampled_from(["minute", "second", "microsecond"]))
    if precision == "minute":
        return instant.replace(second=0, microsecond=0)
    if precision == "microsecond":
        return instant + timedelta(microseconds=draw(st.integers(1, 999_999)))
    return instant.replace(microsecond=0)


@st.composite
def instants(draw: st.DrawFn, zone: Zone) -> datetime:
    """An instant in 2020-2035, half of the time within a day or so of a DST transition."""
    seconds = draw(st.integers(0, 16 * 365 * 86400))
    instant = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    transitions = _transitions(zone)
    if draw(st.booleans()) and len(transitions) > 0:
        instant = draw(st.sampled_from(transitions))
        instant += timedelta(seconds=draw(st.integers(-30 * 3600, 6 * 3600)))
    return draw(precise(instant))


def _build(generated: Generated, zone: Zone) -> CronSchedule:
    """The schedule; examples whose days can never exist are checked for the right refusal."""
    spec = generated.spec
    longest = max(
        29 if m == 2 else (31 if m in (1, 3, 5, 7, 8, 10, 12) else 30) for m in spec.months
    )
    # The two refusals the generator can run into (see the module docstring of cron/parse.py).
    expected = None
    if not spec.last_day and spec.days and min(spec.days) > longest:
        expected = "never occur"
    if spec.last_day and len(spec.days) == 30:
        expected = "'L' together with 30 other days"
    try:
        schedule = CronSchedule(generated.text, zone)
    except ScheduleError as exc:
        refusal = str(exc)
    else:
        assert expected is None, f"{generated.text!r} accepted, expected a refusal: {expected}"
        return schedule
    assert expected is not None, f"{generated.text!r} refused: {refusal}"
    assert expected in refusal
    assume(False)
    raise AssertionError("unreachable: assume(False) ends the example")


def _fires_until(schedule: CronSchedule, start: datetime, end: datetime) -> list[RefFire]:
    found: list[RefFire] = []
    current = start
    while (fire := schedule.next_fire(current)) is not None and fire.at <= end:
        assert fire.at > current
        found.append(RefFire(fire.at, fire.note is not None))
        current = fire.at
    return found


def _check_window(schedule: CronSchedule, spec: CronSpec, start: datetime, end: datetime) -> None:
    expected = reference_fires(spec, schedule.zone, start, end)
    assert _fires_until(schedule, start, end) == expected
    event("fixed-time" if spec.fixed_time else "wildcard")
    event(f"fires: {min(len(expected), 10)}{'+' if len(expected) >= 10 else ''}")
    if any(fire.noted for fire in expected):
        event("a fire was moved or deduplicated by DST")
    transition = schedule.zone.next_transition(start)
    if transition is not None and transition <= end:
        event("window spans a transition")


@settings(SETTINGS, max_examples=600)
@given(data=st.data(), zone_name=st.sampled_from(ZONES), generated=expressions())
def test_fires_in_a_window_match_the_reference(
    data: st.DataObject, zone_name: str, generated: Generated
) -> None:
    zone = get_zone(zone_name)
    schedule = _build(generated, zone)
    window = timedelta(hours=data.draw(st.sampled_from([3, 26, 50])))
    start = data.draw(instants(zone))
    if data.draw(st.integers(1, 10)) != 7:
        # Mostly put a fire inside the window (found by the code under test, but the whole window
        # is compared), so that schedules with few days are exercised too.
        upcoming = schedule.next_fire(start)
        if upcoming is not None and upcoming.at.year <= 2036:
            before = timedelta(seconds=data.draw(st.integers(60, window // timedelta(seconds=1))))
            start = data.draw(precise(upcoming.at - before))
    _check_window(schedule, generated.spec, start, start + window)


@settings(SETTINGS, max_examples=600)
@given(data=st.data(), zone_name=st.sampled_from(ZONES[:-2]), generated=expressions("dst"))
def test_fires_around_dst_transitions_match_the_reference(
    data: st.DataObject, zone_name: str, generated: Generated
) -> None:
    zone = get_zone(zone_name)
    schedule = _build(generated, zone)
    window = timedelta(hours=data.draw(st.sampled_from([26, 50])))
    transition = data.draw(st.sampled_from(_transitions(zone)))
    before = timedelta(seconds=data.draw(st.integers(2, window // timedelta(seconds=1))))
    start = data.draw(precise(transition - before))
    _check_window(schedule, generated.spec, start, start + window)


@settings(SETTINGS, max_examples=160)
@given(data=st.data(), zone_name=st.sampled_from(ZONES), generated=expressions("sparse"))
def test_first_fire_of_sparse_schedules_matches_the_reference(
    data: st.DataObject, zone_name: str, generated: Generated
) -> None:
    zone = get_zone(zone_name)
    schedule = _build(generated, zone)
    start = data.draw(instants(zone))
    fire = schedule.next_fire(start)
    # Widen the reference's window until it sees a fire (the search is slow, fires are rare).
    window = timedelta(days=20)
    while window < timedelta(days=9 * 366):
        expected = reference_fires(generated.spec, zone, start, start + window, first_only=True)
        if expected:
            assert fire is not None
            assert RefFire(fire.at, fire.note is not None) == expected[0]
            return
        window *= 3
    assert fire is None or fire.at > start + window / 3


@settings(SETTINGS, max_examples=300)
@given(generated=expressions("croniter"), data=st.data())
def test_utc_fires_match_croniter(generated: Generated, data: st.DataObject) -> None:
    zone = get_zone("UTC")
    schedule = _build(generated, zone)
    start = data.draw(instants(zone)).replace(tzinfo=None)
    iterator = croniter(generated.text, start)
    current = start.replace(tzinfo=UTC)
    for _ in range(4):
        fire = schedule.next_fire(current)
        assert fire is not None
        assert fire.at.replace(tzinfo=None) == iterator.get_next(datetime)
        current = fire.at


@settings(SETTINGS, max_examples=160)
@given(data=st.data(), zone_name=st.sampled_from(ZONES), generated=expressions())
def test_next_fire_is_the_first_fire_after_any_instant(
    data: st.DataObject, zone_name: str, generated: Generated
) -> None:
    """Asking from just before, at, and between fires gives the same answers as iterating."""
    zone = get_zone(zone_name)
    schedule = _build(generated, zone)
    start = data.draw(instants(zone))
    fire = schedule.next_fire(start)
    assume(fire is not None)
    assert fire is not None
    tick = timedelta(microseconds=1)
    assert schedule.next_fire(fire.at - tick) == fire
    following = schedule.next_fire(fire.at)
    assert following is None or following.at > fire.at
    if following is not None and following.at - fire.at > tick:
        middle = fire.at + (following.at - fire.at) / 2
        assert schedule.next_fire(middle) == following
