"""``solar = "sunset"``: fires at a solar event at one place, shifted by a signed elapsed offset.

Semantics (docs/design.md §2): sunrise/sunset is the upper limb on the horizon with standard
refraction (sun centre at −0.833°, lowered by the dip of the horizon for an observer above sea
level); dawn/dusk is the sun centre at −depression° (rising/setting); noon is the solar transit. An
event belongs to the local calendar day on which it happens; a day without it (polar day or night)
is skipped, never substituted. The offset is elapsed time added to the event instant, so DST never
stretches it.

astral's event helpers (``astral.sun.sunrise`` …) work per *UTC date* and raise or pick the wrong
day near local midnight, at high latitudes and for zones far from their meridian, so they are not
used. Crossings are solved here per *solar day* instead, with astral's low-level NOAA formulas for
the sun's declination and the equation of time. Solar day ``n`` runs from the lower culmination
(hour angle −180°) before the transit near ``n + 0.5 − longitude/360`` (days since the Unix epoch,
UTC) to the one after it, so every solar day has exactly one transit, at most one rising and at most
one setting crossing, and the events of consecutive solar days are in UTC order. Fires are all
events in that order; local dates only matter for the notes on days without the event.

Event instants are rounded to whole seconds: the formulas are good to a few seconds, and whole
seconds keep slot ids short and make ``next_fire(fire.at)`` step past ``fire`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from enum import Enum
from types import MappingProxyType
from typing import Any

from astral.julian import julianday_to_juliancentury
from astral.sun import eq_of_time, sun_declination

from chronod.durations import format_duration
from chronod.errors import ScheduleError
from chronod.schedules.base import Fire, Schedule
from chronod.tz import UTC, Zone

EVENTS = ("sunrise", "sunset", "noon", "dawn", "dusk")
# The named twilights of ``depression = "civil" | …``, in degrees below the horizon.
DEPRESSIONS = MappingProxyType({"civil": 6.0, "nautical": 12.0, "astronomical": 18.0})
MAX_ELEVATION = 9000.0  # metres; above any summit, so larger values are typos
MIN_ELEVATION = -1000.0  # metres; the lowest dry land (Dead Sea shore) is about −430 m

_RISING = ("sunrise", "dawn")
_SETTING = ("sunset", "dusk")
_UPPER_LIMB_ALTITUDE = -0.833  # degrees: semidiameter 16′ + standard refraction 34′
# The dip of the horizon seen from h metres up is DIP_ARCMIN_PER_SQRT_M′·√h: the sunrise
# equation's form, refraction included (astral's geometric dip is ~1.93′·√h, nautical tables use
# 1.76′·√h). The README states it, so users comparing tools know where a minute comes from.
DIP_ARCMIN_PER_SQRT_M = 2.076
# The formulas give the sun as seen from the Earth's centre; from its surface the sun is lower by
# the solar parallax. Only 8.8″ (about half a second at mid latitudes), but on days when the sun
# just grazes the threshold it decides whether the event happens, so it is applied to match the sky.
_SOLAR_PARALLAX = 8.794 / 3600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX_EPOCH_JD = 2440587.5
_MICRO = timedelta(microseconds=1)
_US_PER_DAY = 86_400_000_000
# Long enough to get past the longest polar night or day anywhere (about 180 days at a pole) and
# find the yearly event there; an event still missing after that never happens (e.g. "dusk at −30°"
# at a pole), and the schedule has ended.
_SEARCH_DAYS = 370
# The fast path trusts a crossing only if the threshold is at least this far (in sine of altitude)
# inside the sun's daily range of altitudes, and an absence only if it is this far outside. The
# declination moves at most ~0.2° (0.0035 in sine) in half a day, so beyond this margin the sun
# surely crosses the threshold exactly once that solar day, or surely not at all; closer to the
# extremes (polar transitions, the poles) the careful bracketed solve decides.
_FAST_MARGIN = 0.01
_FAST_ITERATIONS = 8
_TOLERANCE_DAYS = 1e-6  # 0.09 s: far below the whole-second rounding and the formulas' accuracy
# Per-instance memo of solar days: enough for `chronod next --count 50` and catch-up walks.
_CACHE_DAYS = 64


class _Absent(Enum):
    """Why a solar day has no crossing: the sun stays below or above the threshold all day."""

    BELOW = "below"
    ABOVE = "above"


class SolarSchedule(Schedule):
    """Fires at ``event`` + ``offset`` seen from (``latitude``, ``longitude``), in UTC order."""

    def __init__(
        self,
        *,
        event: str,
        latitude: float,
        longitude: float,
        zone: Zone,
        elevation: float = 0.0,
        depression: float = 6.0,
        offset: timedelta = timedelta(0),
    ) -> None:
        if event not in EVENTS:
            raise ScheduleError(
                f"unknown solar event {event!r} (use sunrise, sunset, noon, dawn or dusk)"
            )
        latitude = _number("latitude", latitude, -90.0, 90.0)
        longitude = _number("longitude", longitude, -180.0, 180.0)
        elevation = _number("elevation", elevation, MIN_ELEVATION, MAX_ELEVATION, unit=" m")
        depression = _number("depression", depression, 0.0, 90.0, unit="°", open_interval=True)
        if not isinstance(offset, timedelta):
            raise ScheduleError("offset must be a duration")
        self.event = event
        # Normalized once so that two definitions with the same canonical form (hence fingerprint)
        # compute with the very same floats and produce the very same instants.
        self.latitude = _rounded(latitude, 6)
        self.longitude = _rounded(longitude, 6)
        self.elevation = _rounded(elevation, 1)
        self.depression = _rounded(depression, 6)
        self.offset = offset
        self.zone = zone

        if event in ("sunrise", "sunset"):
            # Below sea level the horizon is not lowered (as in astral): only height above counts.
            dip = DIP_ARCMIN_PER_SQRT_M * math.sqrt(self._effective_elevation) / 60.0
            altitude = _UPPER_LIMB_ALTITUDE - dip
        elif event in ("dawn", "dusk"):
            altitude = -self.depression
        else:
            altitude = 0.0  # unused: noon is the transit
        self._sign = -1 if event in _RISING else 1 if event in _SETTING else 0
        geocentric = altitude + _SOLAR_PARALLAX * math.cos(math.radians(altitude))
        self._sin_h0 = math.sin(math.radians(geocentric))
        self._sin_lat = math.sin(math.radians(self.latitude))
        self._cos_lat = math.cos(math.radians(self.latitude))
        self._lon_days = self.longitude / 360.0
        self._offset_us = offset // _MICRO
        self._days: dict[int, int | _Absent] = {}

    @property
    def _effective_elevation(self) -> float:
        return max(self.elevation, 0.0) if self.event in ("sunrise", "sunset") else 0.0

    # -- Schedule ----------------------------------------------------------------------------------

    def _first_after(self, after: datetime) -> Fire | None:
        if after.tzinfo is None:
            raise ValueError(f"naive datetime {after!r} where an aware instant was expected")
        return self._search(after)

    def canonical(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": "solar",
            "event": self.event,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "offset_s": self.offset.total_seconds(),
            "zone": self.zone.name,
        }
        # Only what can change an instant is fingerprinted, so e.g. editing the depression of a
        # sunrise job (where it is ignored) keeps its state.
        if self.event in ("sunrise", "sunset"):
            data["elevation"] = self._effective_elevation
        if self.event in ("dawn", "dusk"):
            data["depression"] = self.depression
        return data

    def describe(self) -> str:
        if self.event in ("dawn", "dusk"):
            name = next((n for n, d in DEPRESSIONS.items() if d == self.depression), None)
            what = f"{name} {self.event}" if name else f"{self.event} (−{self.depression:g}°)"
        elif self.event == "noon":
            what = "solar noon"
        else:
            what = self.event
        if self.offset:
            amount = format_duration(abs(self.offset), parts=5).replace(" ", "")
            what = f"{amount} {'before' if self.offset < timedelta(0) else 'after'} {what}"
        text = f"{what} at {self.latitude:.4f}, {self.longitude:.4f}"
        if self._effective_elevation:
            text += f" ({self._effective_elevation:g} m)"
        return text

    # -- search ------------------------------------------------------------------------------------

    def _search(self, after: datetime) -> Fire | None:
        # ``a_us``: the fire must be after ``after``, so its event must be after ``after − offset``.
        a_us = (after - _EPOCH) // _MICRO - self._offset_us
        # Solar day ``start − 1`` ends at least 55 min before ``a`` (its mean end is 72 min before,
        # the equation of time moves it by up to 17), so the answer is on ``start`` or later;
        # those days are walked in order and the first event after ``a`` wins.
        start = math.floor(a_us / _US_PER_DAY + self._lon_days - 0.05)
        previous: tuple[int, int] | None = None  # (solar day, event): last event at or before a
        absent: list[_Absent] = []  # why the solar days since ``previous`` had no event
        for n in range(start, start + _SEARCH_DAYS):
            event = self._event_on(n)
            if isinstance(event, _Absent):
                absent.append(event)
            elif event * 1_000_000 > a_us:
                return self._fire(start, event, previous, absent, a_us)
            else:
                previous, absent = (n, event), []
        return None

    def _fire(
        self,
        start: int,
        event: int,
        previous: tuple[int, int] | None,
        absent: list[_Absent],
        a_us: int,
    ) -> Fire:
        at = _EPOCH + timedelta(seconds=event)
        when = self.zone.wall(at).date()
        if previous is None:
            # The answer is on the first day walked, or the days before it had no event. Only day
            # ``start − 1`` can still hold an event on the local date of ``a``: anything older is
            # over a day before ``a``, and the note starts at the local date of ``a`` either way.
            earlier = self._event_on(start - 1)
            if isinstance(earlier, _Absent):
                absent.insert(0, earlier)
            else:
                previous = (start - 1, earlier)
        before = None if previous is None else self._local_date(previous[1])
        note = None
        if before is None or (when - before).days > 1:
            first = self._local_date_us(a_us)
            if before is not None:
                first = max(first, before + timedelta(days=1))
            if first < when:
                note = self._skip_note(first, when - timedelta(days=1), absent)
        elif when == before:
            note = f"second {self.event} on {when.isoformat()}: it crossed local midnight"
        return Fire(at + self.offset, note)

    def _skip_note(self, first: date, last: date, absent: list[_Absent]) -> str:
        span = first.isoformat() if first == last else f"{first.isoformat()} … {last.isoformat()}"
        reasons: list[str] = []
        for why in absent:
            reason = self._absent_reason(why)
            if reason not in reasons:
                reasons.append(reason)
        # With an event on every solar day, a local date goes without one only when the event's
        # clock time drifts across local midnight (e.g. sunset near 00:00 in Reykjavík in June).
        text = ", then ".join(reasons) if reasons else f"the {self.event} crossed local midnight"
        return f"no {self.event} {span}: {text}"

    def _absent_reason(self, why: _Absent) -> str:
        if self.event in ("sunrise", "sunset"):
            return "polar night" if why is _Absent.BELOW else "midnight sun"
        side = "below" if why is _Absent.BELOW else "above"
        return f"sun stays {side} −{self.depression:g}°"

    def _local_date(self, seconds: int) -> date:
        return self.zone.wall(_EPOCH + timedelta(seconds=seconds)).date()

    def _local_date_us(self, micros: int) -> date:
        return self.zone.wall(_EPOCH + timedelta(microseconds=micros)).date()

    # -- astronomy ---------------------------------------------------------------------------------

    def _event_on(self, n: int) -> int | _Absent:
        """The event of solar day ``n`` in whole seconds since the epoch, or why there is none."""
        known = self._days.get(n)
        if known is not None:
            return known
        result = self._solve_day(n)
        # Single dict operations are atomic, and threads racing on a day store the same value.
        if len(self._days) >= _CACHE_DAYS:
            self._days.clear()  # crude but bounded; walks are local, so refills are cheap
        self._days[n] = result
        return result

    def _solve_day(self, n: int) -> int | _Absent:
        mean_transit = n + 0.5 - self._lon_days  # days since the epoch, UTC
        if self._sign == 0:
            return _whole_seconds(self._transit(mean_transit))
        # Fixed-point iteration on the hour angle: t = transit ± H(δ(t)) with δ and the equation of
        # time evaluated at the current estimate. Converges in about 3 steps at mid latitudes.
        t = mean_transit + self._sign * 0.25
        for _ in range(_FAST_ITERATIONS):
            declination, eot = _sun_at(t)
            cos_dec = math.cos(math.radians(declination))
            scale = self._cos_lat * cos_dec
            cos_h = (self._sin_h0 - self._sin_lat * math.sin(math.radians(declination))) / scale
            # How far (in sine of altitude) the threshold is inside the day's range of altitudes;
            # negative when the sun stays on one side of it all day.
            inside = scale * (1.0 - abs(cos_h))
            if inside <= -_FAST_MARGIN:
                return _Absent.BELOW if cos_h > 0.0 else _Absent.ABOVE
            if inside < _FAST_MARGIN:
                return self._solve_day_carefully(mean_transit)
            hour_angle = self._sign * math.degrees(math.acos(cos_h))
            estimate = mean_transit + (hour_angle - eot / 4.0) / 360.0
            if abs(estimate - t) < _TOLERANCE_DAYS:
                return _whole_seconds(estimate)
            t = estimate
        return self._solve_day_carefully(mean_transit)

    def _solve_day_carefully(self, mean_transit: float) -> int | _Absent:
        """Existence from the altitude at the transit and both lower culminations, then a bracketed
        solve.

        Near polar transitions the sun barely reaches the threshold and the hour-angle iteration may
        not settle. The altitude is monotonic between a lower culmination and the transit, so a sign
        change of (altitude − threshold) there brackets the one crossing, which a bracketing solver
        always finds. The crossing normally lies in its own half of the day (rising before the
        transit, setting after it); only within a few tenths of a degree of a pole, where the daily
        swing of the sun's altitude is smaller than the drift of its declination, can the sun rise
        while the hour angle says it should be sinking, so that half is checked too.
        """

        def excess(t: float) -> float:  # sin(altitude) − sin(threshold)
            declination, eot = _sun_at(t)
            dec = math.radians(declination)
            hour_angle = math.radians(360.0 * (t - mean_transit) + eot / 4.0)
            sin_alt = self._sin_lat * math.sin(dec) + self._cos_lat * math.cos(dec) * math.cos(
                hour_angle
            )
            return sin_alt - self._sin_h0

        transit = self._transit(mean_transit)
        at_transit = excess(transit)
        # The half of the solar day where this event belongs, then the other one.
        for culmination in (transit + self._sign * 0.5, transit - self._sign * 0.5):
            at_culmination = excess(culmination)
            if at_culmination * at_transit >= 0.0:
                continue
            low, f_low, high, f_high = (
                (culmination, at_culmination, transit, at_transit)
                if at_culmination < 0.0
                else (transit, at_transit, culmination, at_culmination)
            )
            # The sun rises through the threshold when the end below it comes first.
            if (low < high) == (self._sign < 0):
                return _whole_seconds(_illinois(excess, low, f_low, high, f_high))
        return _Absent.ABOVE if at_transit > 0.0 else _Absent.BELOW

    def _transit(self, mean_transit: float) -> float:
        # The equation of time changes by < 30 s a day, so two evaluations are exact to ~1 ms.
        t = mean_transit
        for _ in range(2):
            t = mean_transit - _sun_at(t)[1] / 1440.0
        return t


def _sun_at(days: float) -> tuple[float, float]:
    """Declination (degrees) and equation of time (minutes) ``days`` after the Unix epoch (UT)."""
    century = julianday_to_juliancentury(days + _UNIX_EPOCH_JD)
    return float(sun_declination(century)), float(eq_of_time(century))


def _illinois(
    f: Callable[[float], float], low: float, f_low: float, high: float, f_high: float
) -> float:
    """Root of ``f`` between ``low`` (f < 0) and ``high`` (f > 0), in either order (Illinois).

    Regula falsi with the stale end's value halved, so a one-sided approach (the usual case near a
    grazing sun) still converges superlinearly while the bracket keeps it safe.
    """
    side = 0
    t = low
    for _ in range(100):
        previous = t
        t = (low * f_high - high * f_low) / (f_high - f_low)
        if abs(t - previous) < _TOLERANCE_DAYS or abs(high - low) < _TOLERANCE_DAYS:
            break
        value = f(t)
        if value == 0.0:
            break
        if value < 0.0:
            low, f_low = t, value
            if side < 0:
                f_high /= 2.0
            side = -1
        else:
            high, f_high = t, value
            if side > 0:
                f_low /= 2.0
            side = 1
    return t


def _whole_seconds(days: float) -> int:
    return round(days * 86_400.0)


def _rounded(value: float, digits: int) -> float:
    return round(value, digits) + 0.0  # + 0.0 turns −0.0 into 0.0 so both fingerprint alike


def _number(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    unit: str = "",
    open_interval: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScheduleError(f"{name} must be a number, not {value!r}")
    number = float(value)
    inside = low < number < high if open_interval else low <= number <= high
    if not inside:  # also rejects NaN, which compares false with everything
        brackets = "()" if open_interval else "[]"
        raise ScheduleError(
            f"{name} must be in {brackets[0]}{low:g}, {high:g}{brackets[1]}{unit}, not {value!r}"
        )
    return number
