"""Solar schedules against PyEphem, an independent ephemeris (VSOP87 theory, its own riset search).

The reference walks ephem's own solar days (transit to transit) and asks for each one's crossing,
so "no event that day" comes from ephem's NeverUpError/AlwaysUpError, not from our code. Whole event
sequences are compared, which catches missed and duplicated events as well as wrong times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path

import ephem
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.errors import ScheduleError
from chronod.schedules.base import Fire
from chronod.schedules.solar import DIP_ARCMIN_PER_SQRT_M, SolarSchedule
from chronod.tz import UTC, Zone, get_zone

TOLERANCE = timedelta(seconds=60)
_EPHEM_EPOCH = datetime(1899, 12, 31, 12, tzinfo=UTC)  # ephem.Date(0)


@dataclass(frozen=True)
class Place:
    name: str
    latitude: float
    longitude: float
    zone: str


BERLIN = Place("berlin", 52.52, 13.405, "Europe/Berlin")
NEW_YORK = Place("new-york", 40.7128, -74.006, "America/New_York")
SYDNEY = Place("sydney", -33.8688, 151.2093, "Australia/Sydney")
BUENOS_AIRES = Place("buenos-aires", -34.6037, -58.3816, "America/Argentina/Buenos_Aires")
CAPE_TOWN = Place("cape-town", -33.9249, 18.4241, "Africa/Johannesburg")
TOKYO = Place("tokyo", 35.6762, 139.6503, "Asia/Tokyo")
TROMSO = Place("tromso", 69.6492, 18.9553, "Europe/Oslo")
REYKJAVIK = Place("reykjavik", 64.1466, -21.9426, "Atlantic/Reykjavik")
# Kashgar keeps Beijing time (UTC+8) officially, ~3 h ahead of its sun; locals use Urumqi time (+6).
KASHGAR_BEIJING = Place("kashgar-shanghai", 39.4704, 75.9898, "Asia/Shanghai")
KASHGAR_URUMQI = Place("kashgar-urumqi", 39.4704, 75.9898, "Asia/Kashgar")
KIRITIMATI = Place("kiritimati", 1.8721, -157.4278, "Pacific/Kiritimati")  # UTC+14 at ~UTC−10.5 sun
USHUAIA = Place("ushuaia", -54.8019, -68.3030, "America/Argentina/Ushuaia")
# A ship near the date line keeping UTC−12: its noon is around 00:00 UTC, on either UTC date.
DATE_LINE = Place("date-line", -10.0, 179.9, "Etc/GMT+12")

MID_LATITUDE = (BERLIN, NEW_YORK, SYDNEY, BUENOS_AIRES, CAPE_TOWN, TOKYO)
# A different year per city, so leap years and the calendar's drift against the seasons show up.
YEARS = {
    BERLIN: 2026,
    NEW_YORK: 2024,
    SYDNEY: 2027,
    BUENOS_AIRES: 2030,
    CAPE_TOWN: 2025,
    TOKYO: 2028,
}


@dataclass(frozen=True)
class Kind:
    """An event kind as configured: ``event`` plus the depression for dawn/dusk."""

    event: str
    depression: float = 6.0

    @property
    def label(self) -> str:
        return (
            self.event if self.event not in ("dawn", "dusk") else f"{self.event}{self.depression:g}"
        )


KINDS = (
    Kind("sunrise"),
    Kind("sunset"),
    Kind("noon"),
    *(Kind(event, depression) for depression in (6.0, 12.0, 18.0) for event in ("dawn", "dusk")),
)


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def schedule(
    place: Place, kind: Kind, *, offset: timedelta = timedelta(0), elevation: float = 0.0
) -> SolarSchedule:
    return SolarSchedule(
        event=kind.event,
        latitude=place.latitude,
        longitude=place.longitude,
        zone=get_zone(place.zone),
        elevation=elevation,
        depression=kind.depression,
        offset=offset,
    )


def fires_between(sched: SolarSchedule, start: datetime, end: datetime) -> list[Fire]:
    out: list[Fire] = []
    for fire in sched.fires(start):
        if fire.at >= end:
            break
        out.append(fire)
    return out


def local_date(zone: Zone, instant: datetime) -> date:
    return zone.wall(instant).date()


# -- the ephem reference ---------------------------------------------------------------------------


def _to_ephem(instant: datetime) -> float:
    return (instant - _EPHEM_EPOCH) / timedelta(days=1)


def _from_ephem(value: float) -> datetime:
    return _EPHEM_EPOCH + timedelta(days=float(value))


def _observer(place: Place, kind: Kind, elevation: float) -> tuple[ephem.Observer, bool]:
    obs = ephem.Observer()
    obs.lat = str(place.latitude)
    obs.lon = str(place.longitude)
    obs.elevation = 0.0
    obs.pressure = 0.0  # no refraction model: the −34′ horizon below is the standard refraction
    if kind.event in ("sunrise", "sunset"):
        dip = 2.076 * math.sqrt(max(elevation, 0.0)) / 60.0
        obs.horizon = -math.radians(34.0 / 60.0 + dip)
        return obs, False  # upper limb
    obs.horizon = -math.radians(kind.depression)
    return obs, True  # sun centre


GRAZE = 0.01  # degrees


@dataclass(frozen=True)
class RefDay:
    """ephem's view of one solar day: its transit; its event, or ``"never-up"`` / ``"always-up"``
    from ephem's NeverUpError / AlwaysUpError; and, when the sun's highest or lowest point that day
    is within GRAZE of the threshold, the instant of that extreme: there two good ephemerides may
    disagree on whether the event happens at all."""

    transit: datetime
    event: datetime | str
    grazing: datetime | None


@cache
def _ephem_culminations(
    place: Place, start: datetime, end: datetime
) -> tuple[tuple[float, float, float], ...]:
    """(lower culmination before, transit, lower culmination after) for transits in [start, end)."""
    obs, _ = _observer(place, Kind("noon"), 0.0)
    sun = ephem.Sun()
    out: list[tuple[float, float, float]] = []
    transit = obs.next_transit(sun, start=_to_ephem(start))
    before = obs.previous_antitransit(sun, start=transit)
    while transit < _to_ephem(end):
        after = obs.next_antitransit(sun, start=transit)
        out.append((float(before), float(transit), float(after)))
        transit, before = obs.next_transit(sun, start=after), after
    return tuple(out)


@cache
def ephem_days(
    place: Place, kind: Kind, start: datetime, end: datetime, elevation: float = 0.0
) -> tuple[RefDay, ...]:
    """ephem's events, one per ephem solar day with a transit in [start, end)."""
    obs, use_center = _observer(place, kind, elevation)
    sun = ephem.Sun()
    five_minutes = 5.0 / 1440.0
    rising = kind.event in ("sunrise", "dawn")
    out: list[RefDay] = []
    for before, transit, after in _ephem_culminations(place, start, end):
        if kind.event == "noon":
            out.append(RefDay(_from_ephem(transit), _from_ephem(transit), None))
            continue
        try:
            if rising:
                # Start just before the lower culmination that opens this solar day: ephem then
                # searches forward within it (and reports circumpolarity for it, not the next).
                found = obs.next_rising(sun, start=before - five_minutes, use_center=use_center)
            else:
                found = obs.next_setting(sun, start=transit - five_minutes, use_center=use_center)
            event: datetime | str = _from_ephem(found)
        except ephem.NeverUpError:
            event = "never-up"
        except ephem.AlwaysUpError:
            event = "always-up"
        grazing = None
        for extreme in (transit, before if rising else after):
            obs.date = extreme
            sun.compute(obs)
            threshold = float(obs.horizon) - (0.0 if use_center else float(sun.radius))
            if abs(math.degrees(float(sun.alt) - threshold)) < GRAZE:
                grazing = _from_ephem(extreme)
        out.append(RefDay(_from_ephem(transit), event, grazing))
    return tuple(out)


def ephem_events(
    place: Place, kind: Kind, start: datetime, end: datetime, elevation: float = 0.0
) -> list[datetime]:
    return [
        d.event
        for d in ephem_days(place, kind, start, end, elevation)
        if isinstance(d.event, datetime)
    ]


def assert_same_events(
    ours: list[datetime], reference: list[RefDay], tolerance: timedelta = TOLERANCE
) -> list[tuple[datetime, datetime]]:
    """Pair our events with ephem's in order, each within ``tolerance``; an event only one side
    has must be on a day where the sun grazes the threshold (at most two). Returns the pairs."""
    theirs = [(d.event, d.grazing) for d in reference if isinstance(d.event, datetime)]
    grazing = [d.grazing for d in reference if d.grazing is not None]
    pairs: list[tuple[datetime, datetime]] = []
    i = j = unmatched = 0
    while i < len(ours) or j < len(theirs):
        if i < len(ours) and j < len(theirs) and abs(ours[i] - theirs[j][0]) <= tolerance:
            pairs.append((ours[i], theirs[j][0]))
            i, j = i + 1, j + 1
        elif j < len(theirs) and (i == len(ours) or theirs[j][0] < ours[i]):
            assert theirs[j][1] is not None, (
                f"missed ephem's {theirs[j][0]}; ours: {ours[i : i + 1]}"
            )
            j, unmatched = j + 1, unmatched + 1
        else:
            near = any(abs(ours[i] - g) < timedelta(hours=1) for g in grazing)
            assert near, f"ours {ours[i]} is not ephem's; theirs: {theirs[j : j + 1]}"
            i, unmatched = i + 1, unmatched + 1
    assert unmatched <= 2
    return pairs


def absent_reason(kind: Kind, why: str) -> str:
    if kind.event in ("sunrise", "sunset"):
        return "polar night" if why == "never-up" else "midnight sun"
    return f"sun stays {'below' if why == 'never-up' else 'above'} −{kind.depression:g}°"


def expected_notes(
    zone: Zone, kind: Kind, fires: list[Fire], reference: list[RefDay]
) -> dict[datetime, str]:
    """The note each fire but the first should carry: local dates between two consecutive events
    have none, with ephem's reason (its circumpolar days between them), or else the event's clock
    time crossed midnight; a local date with two events notes the second."""
    out: dict[datetime, str] = {}
    for prev, fire in pairwise(fires):
        before, when = local_date(zone, prev.at), local_date(zone, fire.at)
        if when == before:
            out[fire.at] = f"second {kind.event} on {when}: it crossed local midnight"
        elif (when - before).days > 1:
            first, last = before + timedelta(days=1), when - timedelta(days=1)
            span = str(first) if first == last else f"{first} … {last}"
            whys: list[str] = []
            for day in reference:
                if isinstance(day.event, str) and prev.at < day.transit < fire.at:
                    why = absent_reason(kind, day.event)
                    whys += [] if why in whys else [why]
            text = ", then ".join(whys) or f"the {kind.event} crossed local midnight"
            out[fire.at] = f"no {kind.event} {span}: {text}"
    return out


def _near_midnight(zone: Zone, instant: datetime, tolerance: timedelta) -> bool:
    wall = zone.wall(instant)
    since = wall - wall.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(since, timedelta(days=1) - since) <= tolerance


def compare_year(
    place: Place,
    kind: Kind,
    start: datetime,
    end: datetime,
    *,
    elevation: float = 0.0,
    tolerance: timedelta = TOLERANCE,
) -> tuple[list[Fire], list[datetime]]:
    """Our fires and ephem's events inside [start + 1d, end − 1d] (so the edges of ephem's transit
    walk cannot cut an event off), after asserting that they pair up, fall on the same local dates
    (up to events within ``tolerance`` of midnight) and that the notes are the expected ones."""
    inner_start, inner_end = start + timedelta(days=1), end - timedelta(days=1)
    ours = fires_between(schedule(place, kind, elevation=elevation), inner_start, inner_end)
    reference = [
        d
        for d in ephem_days(place, kind, start, end, elevation)
        if not isinstance(d.event, datetime) or inner_start < d.event < inner_end
    ]
    pairs = assert_same_events([f.at for f in ours], reference, tolerance)
    zone = get_zone(place.zone)
    for mine, ref in pairs:
        assert local_date(zone, mine) == local_date(zone, ref) or _near_midnight(
            zone, ref, tolerance
        )
    if len(pairs) == len(ours):  # (with a grazing mismatch ephem would note other days)
        notes = {f.at: f.note for f in ours[1:] if f.note is not None}
        assert notes == expected_notes(zone, kind, ours, reference)
    return ours, [ref for _, ref in pairs]


# -- accuracy at mid latitudes ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.label)
@pytest.mark.parametrize("place", MID_LATITUDE, ids=lambda p: p.name)
def test_every_event_of_a_year_matches_ephem(place: Place, kind: Kind) -> None:
    year = YEARS[place]
    ours, _ = compare_year(place, kind, utc(year, 1, 1), utc(year + 1, 1, 1))
    assert len(ours) > (120 if kind.depression == 18.0 else 360)


def test_no_astronomical_darkness_in_a_berlin_summer() -> None:
    # 52.5° N: around the solstice the sun stays above −18°; those days are skipped, not faked.
    days = ephem_days(BERLIN, Kind("dusk", 18.0), utc(2026, 1, 1), utc(2027, 1, 1))
    assert sum(d.event == "always-up" for d in days) > 40
    fire = schedule(BERLIN, Kind("dusk", 18.0)).next_fire(utc(2026, 6, 1))
    assert fire is not None
    assert fire.at.month == 7
    assert fire.note is not None
    assert fire.note.startswith("no dusk 2026-06-0")
    assert fire.note.endswith(": sun stays above −18°")


@settings(max_examples=150, deadline=None)
@given(
    place=st.sampled_from(MID_LATITUDE),
    # Kinds that happen every day at all of MID_LATITUDE, so ephem's next_* never raises.
    kind=st.sampled_from([Kind("sunrise"), Kind("sunset"), Kind("dawn"), Kind("dusk", 12.0)]),
    after=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)),
    offset_minutes=st.integers(min_value=-240, max_value=240),
)
def test_next_fire_from_any_instant_matches_ephem(
    place: Place, kind: Kind, after: datetime, offset_minutes: int
) -> None:
    offset = timedelta(minutes=offset_minutes)
    after = after.replace(tzinfo=UTC)
    fire = schedule(place, kind, offset=offset).next_fire(after)
    assert fire is not None
    assert fire.at > after
    obs, use_center = _observer(place, kind, 0.0)
    search = obs.next_rising if kind.event in ("sunrise", "dawn") else obs.next_setting
    event = after - offset
    reference = _from_ephem(search(ephem.Sun(), start=_to_ephem(event), use_center=use_center))
    if reference - event <= TOLERANCE and abs(fire.at - offset - reference) > TOLERANCE:
        # An event this close after `after − offset` may rightly be past for us: then ours is the
        # following one.
        reference = _from_ephem(
            search(ephem.Sun(), start=_to_ephem(reference) + 0.5, use_center=use_center)
        )
    assert abs(fire.at - offset - reference) <= TOLERANCE


def test_noon_is_the_transit_on_every_local_date() -> None:
    # astral's noon() is computed for a UTC date; with UTC+14 (Kiritimati) that lands on the wrong
    # local date. Here every local date has exactly one noon, matching ephem's transit.
    for place in (KIRITIMATI, KASHGAR_URUMQI, KASHGAR_BEIJING, USHUAIA, DATE_LINE):
        zone = get_zone(place.zone)
        ours, _ = compare_year(place, Kind("noon"), utc(2026, 1, 1), utc(2027, 1, 1))
        dates = [local_date(zone, f.at) for f in ours]
        assert dates == [dates[0] + timedelta(days=k) for k in range(len(dates))], place.name
        assert all(f.note is None for f in ours)
        hours = {zone.wall(f.at).hour for f in ours}
        expected = {
            KIRITIMATI: {12},
            KASHGAR_URUMQI: {12, 13},
            KASHGAR_BEIJING: {14, 15},
            USHUAIA: {12, 13},  # −3 all year, 68° W
            DATE_LINE: {11, 12},
        }[place]
        assert hours <= expected, (place.name, hours)


def test_noon_on_a_given_local_date_far_east_of_utc() -> None:
    sched = schedule(KIRITIMATI, Kind("noon"))
    zone = get_zone(KIRITIMATI.zone)
    # Local midnight starting 2026-06-15 in UTC+14 is 2026-06-14T10:00Z; that day's noon is ~22:30Z.
    fire = sched.next_fire(utc(2026, 6, 14, 10))
    assert fire is not None
    assert local_date(zone, fire.at) == date(2026, 6, 15)
    assert fire.at.date() == date(2026, 6, 14)


# -- high latitudes: days without the event --------------------------------------------------------


def _skipped_dates(zone: Zone, events: list[datetime]) -> list[date]:
    """Local dates strictly between consecutive events."""
    dates = [local_date(zone, e) for e in events]
    out: list[date] = []
    for here, there in pairwise(dates):
        out.extend(here + timedelta(days=k) for k in range(1, (there - here).days))
    return out


def _runs(days: list[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


@dataclass(frozen=True)
class PolarCase:
    kind: Kind
    start: datetime
    end: datetime
    reason: str  # as the note words it
    ephem_says: str  # "never-up" / "always-up"
    first: tuple[date, date]  # the first skipped date is in this range
    last: tuple[date, date]  # the last one in this


def _winter(kind: Kind) -> PolarCase:
    # Polar night: no sunrise or sunset from about Nov 27 to Jan 14.
    first = (date(2026, 11, 24), date(2026, 11, 30))
    last = (date(2027, 1, 11), date(2027, 1, 18))
    return PolarCase(kind, utc(2026, 9, 1), utc(2027, 3, 1), "polar night", "never-up", first, last)


def _summer(
    kind: Kind, reason: str, first: tuple[date, date], last: tuple[date, date]
) -> PolarCase:
    return PolarCase(kind, utc(2027, 3, 1), utc(2027, 10, 1), reason, "always-up", first, last)


# Midnight sun: no sunrise or sunset from about May 18 to Jul 26.
_MIDNIGHT_SUN = ((date(2027, 5, 15), date(2027, 5, 22)), (date(2027, 7, 22), date(2027, 7, 29)))


@pytest.mark.parametrize(
    "case",
    [
        _winter(Kind("sunrise")),
        _winter(Kind("sunset")),
        _summer(Kind("sunset"), "midnight sun", *_MIDNIGHT_SUN),
        _summer(Kind("sunrise"), "midnight sun", *_MIDNIGHT_SUN),
        # White nights: the sun stays above −6° (−12°) for weeks around the solstice.
        _summer(
            Kind("dusk", 6.0),
            "sun stays above −6°",
            (date(2027, 4, 20), date(2027, 5, 5)),
            (date(2027, 8, 5), date(2027, 8, 22)),
        ),
        _summer(
            Kind("dawn", 12.0),
            "sun stays above −12°",
            (date(2027, 3, 25), date(2027, 4, 20)),
            (date(2027, 8, 20), date(2027, 9, 15)),
        ),
    ],
    ids=lambda c: f"{c.kind.label}-{c.ephem_says}",
)
def test_tromso_days_without_the_event_are_skipped(case: PolarCase) -> None:
    zone = get_zone(TROMSO.zone)
    kind, start, end = case.kind, case.start, case.end
    # Right next to a polar transition the sun grazes the threshold, where a tiny difference in
    # altitude moves the crossing by minutes: 60 s is required only away from them.
    ours, theirs = compare_year(TROMSO, kind, start, end, tolerance=timedelta(minutes=3))
    assert len(ours) == len(theirs)
    edges = _edge_events(ours)
    far = [
        (mine.at, ref)
        for mine, ref in zip(ours, theirs, strict=True)
        if all(abs(mine.at - edge) > timedelta(days=5) for edge in edges)
    ]
    assert len(far) > 40
    assert all(abs(mine - ref) <= TOLERANCE for mine, ref in far)

    # The skipped local dates are those without an ephem event (compare_year checked the dates of
    # all events); the long run of them is the polar one, the others single days where the event
    # crossed midnight on its way to or from the run.
    skipped = _skipped_dates(zone, [f.at for f in ours])
    assert _skipped_dates(zone, theirs) == skipped
    run_first, run_last = max(_runs(skipped), key=lambda run: run[1] - run[0])
    assert case.first[0] <= run_first <= case.first[1]
    assert case.last[0] <= run_last <= case.last[1]

    # ephem agrees on why: every solar day without the event is circumpolar its way, and no day
    # grazes the threshold, so existence is beyond doubt on both sides.
    reference = ephem_days(TROMSO, kind, start, end)
    assert not [d for d in reference if d.grazing is not None]
    absent = [d.event for d in reference if isinstance(d.event, str)]
    assert set(absent) == {case.ephem_says}
    assert abs(len(absent) - (run_last - run_first).days - 1) <= 1

    resumed = next(f for f in ours if local_date(zone, f.at) == run_last + timedelta(days=1))
    assert resumed.note == f"no {kind.event} {run_first} … {run_last}: {case.reason}"


def _edge_events(fires: list[Fire]) -> list[datetime]:
    """Fires next to a gap of more than a day (the last before and the first after a polar run)."""
    out: list[datetime] = []
    for here, there in pairwise(fires):
        if there.at - here.at > timedelta(hours=30):
            out.extend((here.at, there.at))
    return out


def test_note_starts_at_the_local_date_of_after() -> None:
    sched = schedule(TROMSO, Kind("sunrise"))
    fire = sched.next_fire(utc(2026, 12, 10, 15))
    assert fire is not None
    assert local_date(get_zone(TROMSO.zone), fire.at) == date(2027, 1, 15)
    assert fire.note == "no sunrise 2026-12-10 … 2027-01-14: polar night"
    # Two days into the run (the last sunrise, on 2026-11-27, is still in sight of `after`).
    fire = sched.next_fire(utc(2026, 11, 29, 12))
    assert fire is not None
    assert fire.note == "no sunrise 2026-11-29 … 2027-01-14: polar night"
    fire = sched.next_fire(utc(2026, 11, 27, 12))
    assert fire is not None
    assert fire.note == "no sunrise 2026-11-28 … 2027-01-14: polar night"
    # From the last day of the run, only that day is left to report.
    fire = sched.next_fire(utc(2027, 1, 14, 12))
    assert fire is not None
    assert fire.note == "no sunrise 2027-01-14: polar night"
    # An ordinary day has no note, also when `after` is just before the event.
    fire = sched.next_fire(utc(2027, 2, 1))
    assert fire is not None
    assert fire.note is None
    assert sched.next_fire(fire.at - timedelta(microseconds=1)) == fire


@pytest.mark.parametrize(
    ("place", "kind"),
    [
        # Reykjavík (UTC+0 at 22° W): around the June solstice the sun sets just after 00:00.
        (REYKJAVIK, Kind("sunset")),
        # Kashgar on Beijing time: astronomical dusk around 00:30 in summer.
        (KASHGAR_BEIJING, Kind("dusk", 18.0)),
        # Tromsø: civil dusk near 00:40 before and after the white nights.
        (TROMSO, Kind("dusk", 6.0)),
    ],
    ids=lambda v: v.name if isinstance(v, Place) else v.label,
)
def test_events_just_after_local_midnight(place: Place, kind: Kind) -> None:
    zone = get_zone(place.zone)
    tolerance = TOLERANCE if place is not TROMSO else timedelta(minutes=3)
    # compare_year also checks every local date and every note against ephem.
    ours, _ = compare_year(place, kind, utc(2026, 1, 1), utc(2027, 1, 1), tolerance=tolerance)
    assert [f for f in ours if zone.wall(f.at).hour == 0]


def test_reykjavik_sunset_crossing_midnight_notes() -> None:
    zone = get_zone(REYKJAVIK.zone)
    ours, _ = compare_year(REYKJAVIK, Kind("sunset"), utc(2026, 1, 1), utc(2027, 1, 1))
    dates = [local_date(zone, f.at) for f in ours]
    # As sunsets get later they cross midnight: one local date goes without; as they get earlier
    # again they cross back: one local date has two. Both are noted, nothing else is.
    skipped = _skipped_dates(zone, [f.at for f in ours])
    doubled = sorted({d for d in dates if dates.count(d) == 2})
    assert len(skipped) == 1
    assert len(doubled) == 1
    assert date(2026, 6, 10) < skipped[0] < doubled[0] < date(2026, 7, 5)
    notes = {local_date(zone, f.at): f.note for f in ours if f.note is not None}
    assert notes == {
        skipped[0]
        + timedelta(days=1): f"no sunset {skipped[0]}: the sunset crossed local midnight",
        doubled[0]: f"second sunset on {doubled[0]}: it crossed local midnight",
    }


def test_the_sun_is_seen_from_the_surface() -> None:
    # On 2026-07-25/26 the sun's centre sinks to −18.0013° in Berlin as seen from the ground (ephem,
    # topocentric) but only to −17.9988° as seen from the Earth's centre: the 8.8″ solar parallax
    # decides whether there is an astronomical dawn that night. There is.
    reference = ephem_days(BERLIN, Kind("dawn", 18.0), utc(2026, 7, 24), utc(2026, 7, 28))
    events = [d.event for d in reference]
    assert events[:2] == ["always-up", "always-up"]
    expected = events[2]
    assert isinstance(expected, datetime)
    assert reference[2].grazing is not None
    fire = schedule(BERLIN, Kind("dawn", 18.0)).next_fire(utc(2026, 7, 25, 12))
    assert fire is not None
    assert abs(fire.at - expected) <= TOLERANCE
    assert fire.note is not None
    assert fire.note == "no dawn 2026-07-25: sun stays above −18°"


def test_poles() -> None:
    zone = get_zone("UTC")
    # At the North Pole the sun rises once a year, around the March equinox, and sets in September.
    rise = SolarSchedule(event="sunrise", latitude=90.0, longitude=0.0, zone=zone)
    first = rise.next_fire(utc(2026, 1, 1))
    assert first is not None
    assert first.at.month == 3
    assert first.note is not None
    assert first.note.endswith(": polar night")
    second = rise.next_fire(first.at)
    assert second is not None
    assert timedelta(days=360) < second.at - first.at < timedelta(days=370)
    assert second.note is not None
    assert second.note.endswith(": midnight sun, then polar night")
    sunset = SolarSchedule(event="sunset", latitude=-90.0, longitude=45.0, zone=zone)
    fire = sunset.next_fire(utc(2026, 1, 1))
    assert fire is not None
    assert fire.at.month == 3
    # The sun never gets 30° below the horizon at a pole: the schedule has no fires at all.
    never = SolarSchedule(event="dawn", latitude=90.0, longitude=0.0, zone=zone, depression=30.0)
    assert never.next_fire(utc(2026, 1, 1)) is None
    assert list(never.fires(utc(2026, 1, 1))) == []


# -- sequence consistency --------------------------------------------------------------------------


@cache
def _reference_fires(place: Place, kind: Kind, offset_minutes: int) -> tuple[Fire, ...]:
    sched = schedule(place, kind, offset=timedelta(minutes=offset_minutes))
    return tuple(fires_between(sched, utc(2025, 9, 1), utc(2027, 2, 1)))


@cache
def _shared_schedule(place: Place, kind: Kind, offset_minutes: int) -> SolarSchedule:
    return schedule(place, kind, offset=timedelta(minutes=offset_minutes))


def _expected_note(
    zone: Zone, offset: timedelta, after: datetime, prev: Fire, fire: Fire
) -> str | None:
    """The note of ``fire`` as the first fire after ``after``, from the walk's own note for it (the
    walk asks from ``prev``, the fire before), with the run of days cut to start no earlier than
    the local date of ``after − offset`` (the event instant matching ``after``)."""
    before = local_date(zone, prev.at - offset)
    when = local_date(zone, fire.at - offset)
    if (when - before).days <= 1:
        return fire.note
    assert fire.note is not None
    first = max(before + timedelta(days=1), local_date(zone, after - offset))
    if first >= when:
        return None
    last = when - timedelta(days=1)
    span = str(first) if first == last else f"{first} … {last}"
    event, reason = fire.note.split(" ")[1], fire.note.split(": ", 1)[1]
    return f"no {event} {span}: {reason}"


@settings(max_examples=400, deadline=None)
@given(
    place=st.sampled_from([TROMSO, REYKJAVIK, KASHGAR_BEIJING, BERLIN, SYDNEY, KIRITIMATI]),
    kind=st.sampled_from(KINDS),
    offset_minutes=st.sampled_from([0, -30, 90, -1440]),
    after=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)),
    nudge=st.sampled_from([None, -1, 0, 1]),
)
def test_next_fire_is_the_first_of_the_sequence_after(
    place: Place, kind: Kind, offset_minutes: int, after: datetime, nudge: int | None
) -> None:
    # The sequence is walked fire to fire; asking from anywhere must land on the same fires, with
    # the same notes except that a run of days without the event is reported from `after` on.
    reference = _reference_fires(place, kind, offset_minutes)
    when = after.replace(tzinfo=UTC)
    if nudge is not None:  # exactly at, or a microsecond around, a fire
        when = min(reference, key=lambda f: abs(f.at - when)).at + timedelta(microseconds=nudge)
    k = next(k for k, f in enumerate(reference) if f.at > when)
    offset = timedelta(minutes=offset_minutes)
    note = _expected_note(get_zone(place.zone), offset, when, reference[k - 1], reference[k])
    expected = Fire(reference[k].at, note)
    # A fresh instance, and one whose per-instance memo holds whatever earlier examples left there.
    assert schedule(place, kind, offset=offset).next_fire(when) == expected
    assert _shared_schedule(place, kind, offset_minutes).next_fire(when) == expected


@pytest.mark.parametrize(
    ("place", "kind"),
    [(TROMSO, Kind("sunset")), (BERLIN, Kind("dusk", 18.0)), (TOKYO, Kind("noon"))],
)
def test_memo_never_changes_an_answer(place: Place, kind: Kind) -> None:
    # One instance asked in every order (forwards, backwards, jumping) answers like fresh ones.
    shared = schedule(place, kind)
    steps = [utc(2026, 5, 1) + timedelta(hours=7 * k) for k in range(150)]
    jumps = [steps[(k * 37) % len(steps)] for k in range(len(steps))]
    for when in [*steps, *reversed(steps), *jumps]:
        assert shared.next_fire(when) == schedule(place, kind).next_fire(when), when


def test_fires_are_whole_seconds_plus_offset() -> None:
    plain = fires_between(schedule(BERLIN, Kind("sunset")), utc(2026, 1, 1), utc(2026, 3, 1))
    shifted = schedule(BERLIN, Kind("sunset"), offset=timedelta(minutes=-30, milliseconds=-250))
    for fire in plain:
        assert fire.at.microsecond == 0
        moved = shifted.next_fire(fire.at - timedelta(minutes=31))
        assert moved is not None
        assert moved.at == fire.at - timedelta(minutes=30, milliseconds=250)


# -- offsets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [-30, 45, -600, 600])
def test_offset_is_elapsed_time(minutes: int) -> None:
    offset = timedelta(minutes=minutes)
    plain = fires_between(schedule(NEW_YORK, Kind("sunset")), utc(2026, 1, 1), utc(2027, 1, 1))
    shifted = schedule(NEW_YORK, Kind("sunset"), offset=offset)
    got = list(fires_between(shifted, plain[0].at + offset - timedelta(hours=1), utc(2028, 1, 1)))
    assert [f.at for f in got[: len(plain)]] == [f.at + offset for f in plain]
    # Strictly after, also with an offset: at a fire we get the next one, a tick before it, itself.
    fire = got[100]
    assert shifted.next_fire(fire.at) == got[101]
    assert shifted.next_fire(fire.at - timedelta(microseconds=1)) == fire


def test_offset_across_dst_changes() -> None:
    zone = get_zone(BERLIN.zone)
    before = schedule(BERLIN, Kind("sunset"), offset=timedelta(minutes=-30))
    plain = schedule(BERLIN, Kind("sunset"))
    for day in (utc(2026, 3, 29), utc(2026, 10, 25)):  # spring forward, fall back
        sunset = plain.next_fire(day)
        fire = before.next_fire(day)
        assert sunset is not None
        assert fire is not None
        assert local_date(zone, sunset.at) == day.date()
        assert sunset.at - fire.at == timedelta(minutes=30)
        reference = ephem_events(BERLIN, Kind("sunset"), day, day + timedelta(days=1))
        assert abs(fire.at + timedelta(minutes=30) - reference[0]) <= TOLERANCE
    # Four hours before sunrise on 2026-03-29 is before the 02:00→03:00 jump: 4 h of real time are
    # 5 h on the wall clock.
    early = schedule(BERLIN, Kind("sunrise"), offset=timedelta(hours=-4))
    sunrise = schedule(BERLIN, Kind("sunrise")).next_fire(utc(2026, 3, 29))
    fire = early.next_fire(utc(2026, 3, 28, 12))
    assert sunrise is not None
    assert fire is not None
    assert sunrise.at - fire.at == timedelta(hours=4)
    assert zone.wall(sunrise.at) - zone.wall(fire.at) == timedelta(hours=5)
    assert zone.wall(fire.at).hour == 1


# -- elevation -------------------------------------------------------------------------------------


def test_elevation_lowers_the_horizon() -> None:
    # Zugspitze-like height: dip of 2.076′·√2962 ≈ 1.9°, i.e. sunrise ~12 min earlier in Berlin.
    start, end = utc(2026, 1, 1), utc(2026, 3, 1)
    high, _ = compare_year(BERLIN, Kind("sunrise"), start, end, elevation=2962.0)
    low, _ = compare_year(BERLIN, Kind("sunrise"), start, end)
    earlier = [b.at - a.at for a, b in zip(high, low, strict=True)]
    assert all(timedelta(minutes=8) < d < timedelta(minutes=20) for d in earlier)
    # Below sea level nothing changes (the horizon is not raised) and neither does dawn with height.
    dead_sea = Place("dead-sea", 31.5, 35.5, "Asia/Jerusalem")
    assert fires_between(
        schedule(dead_sea, Kind("sunset"), elevation=-430.0), start, end
    ) == fires_between(schedule(dead_sea, Kind("sunset")), start, end)
    assert fires_between(
        schedule(BERLIN, Kind("dawn"), elevation=2962.0), start, end
    ) == fires_between(schedule(BERLIN, Kind("dawn")), start, end)


# -- definition: validation, fingerprint, description ---------------------------------------------


def _make(**changes: object) -> SolarSchedule:
    fields: dict[str, object] = {
        "event": "dusk",
        "latitude": 52.52,
        "longitude": 13.405,
        "zone": get_zone("Europe/Berlin"),
    }
    fields.update(changes)
    return SolarSchedule(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event": "sundown"}, "unknown solar event 'sundown'"),
        ({"event": "Sunset"}, "unknown solar event 'Sunset'"),
        ({"latitude": 90.5}, "latitude must be in [-90, 90]"),
        ({"latitude": -91}, "latitude must be in [-90, 90]"),
        ({"latitude": math.nan}, "latitude must be in [-90, 90]"),
        ({"latitude": "52.5"}, "latitude must be a number"),
        ({"latitude": True}, "latitude must be a number"),
        ({"longitude": 180.01}, "longitude must be in [-180, 180]"),
        ({"longitude": -math.inf}, "longitude must be in [-180, 180]"),
        ({"depression": 0}, "depression must be in (0, 90)°"),
        ({"depression": 90}, "depression must be in (0, 90)°"),
        ({"depression": -6}, "depression must be in (0, 90)°"),
        ({"elevation": 9000.5}, "elevation must be in [-1000, 9000] m"),
        ({"elevation": -5000}, "elevation must be in [-1000, 9000] m"),
        ({"offset": 30}, "offset must be a duration"),
    ],
)
def test_invalid_definitions(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        _make(**changes)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"latitude": 90},
        {"latitude": -90.0},
        {"longitude": 180},
        {"longitude": -180},
        {"elevation": -430},
        {"elevation": 9000},
        {"depression": 0.5},
        {"depression": 89.9},
        {"offset": timedelta(days=-1)},
    ],
)
def test_valid_edge_definitions(changes: dict[str, object]) -> None:
    _make(**changes)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        _make().next_fire(datetime(2026, 1, 1))


def test_fingerprint_is_stable() -> None:
    a = _make(offset=timedelta(minutes=-30))
    b = _make(offset=timedelta(seconds=-1800), latitude=52.5200000001, longitude=13.40499999999)
    assert a.fingerprint == b.fingerprint
    assert a.canonical() == {
        "kind": "solar",
        "event": "dusk",
        "latitude": 52.52,
        "longitude": 13.405,
        "depression": 6.0,
        "offset_s": -1800.0,
        "zone": "Europe/Berlin",
    }
    # Equal fingerprints compute with equal numbers, hence equal instants.
    assert [f.at for f in fires_between(a, utc(2026, 1, 1), utc(2026, 2, 1))] == [
        f.at for f in fires_between(b, utc(2026, 1, 1), utc(2026, 2, 1))
    ]
    # A fixed value: changing the canonical form would silently re-arm every solar job on upgrade.
    assert a.fingerprint == "d1b3694f4aeb8a86"
    assert (
        _make(latitude=-0.0, longitude=-0.0).fingerprint
        == _make(latitude=0, longitude=0).fingerprint
    )


def test_fingerprint_changes_with_every_field_that_matters() -> None:
    base = _make()
    variants = [
        _make(event="dawn"),
        _make(latitude=52.520001),
        _make(longitude=13.406),
        _make(depression=12),
        _make(offset=timedelta(seconds=1)),
        _make(zone=get_zone("Europe/Oslo")),
    ]
    prints = {base.fingerprint, *(v.fingerprint for v in variants)}
    assert len(prints) == len(variants) + 1
    sunset = _make(event="sunset")
    assert _make(event="sunset", elevation=100).fingerprint != sunset.fingerprint
    # Fields that cannot move an instant of this event do not re-arm the job.
    assert _make(event="sunset", depression=12).fingerprint == sunset.fingerprint
    assert _make(event="sunset", elevation=-400).fingerprint == sunset.fingerprint
    assert _make(elevation=300).fingerprint == base.fingerprint
    assert _make(event="noon", depression=18).fingerprint == _make(event="noon").fingerprint


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        (
            {"event": "sunset", "offset": timedelta(minutes=-30)},
            "30m before sunset at 52.5200, 13.4050",
        ),
        ({}, "civil dusk at 52.5200, 13.4050"),
        ({"event": "dawn", "depression": 12}, "nautical dawn at 52.5200, 13.4050"),
        ({"event": "dawn", "depression": 18.0}, "astronomical dawn at 52.5200, 13.4050"),
        ({"event": "dusk", "depression": 10.5}, "dusk (−10.5°) at 52.5200, 13.4050"),
        (
            {"event": "noon", "offset": timedelta(hours=1, minutes=30)},
            "1h30m after solar noon at 52.5200, 13.4050",
        ),
        (
            {"event": "sunrise", "latitude": -33.86882, "elevation": 350},
            "sunrise at -33.8688, 13.4050 (350 m)",
        ),
    ],
)
def test_describe(changes: dict[str, object], text: str) -> None:
    assert _make(**changes).describe() == text


def test_the_readme_states_the_dip_formula_the_code_uses() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"**{DIP_ARCMIN_PER_SQRT_M}′·√h**" in readme

    def threshold(elevation: float) -> float:  # the sun's altitude (degrees) at the event
        made = SolarSchedule(
            event="sunrise", latitude=47.0, longitude=8.0, zone=get_zone("UTC"), elevation=elevation
        )
        return math.degrees(math.asin(made._sin_h0))

    for height in (100.0, 1000.0, 4000.0):
        dip = DIP_ARCMIN_PER_SQRT_M * math.sqrt(height) / 60.0
        assert threshold(0.0) - threshold(height) == pytest.approx(dip, abs=1e-5)
    assert threshold(-400.0) == threshold(0.0)  # no dip below sea level
