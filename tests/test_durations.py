from __future__ import annotations

from datetime import timedelta

import pytest

from chronod.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("2d3h4m5s", timedelta(days=2, hours=3, minutes=4, seconds=5)),
        ("250ms", timedelta(milliseconds=250)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "1x", "m", "1m1h", "1.5h", "1h1h", "-"])
def test_reject(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_sign_only_where_allowed() -> None:
    assert parse_duration("-30m", signed=True) == timedelta(minutes=-30)
    assert parse_duration("+1h", signed=True) == timedelta(hours=1)
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_duration("-30m")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=3, hours=4, minutes=5), "3d 4h"),
        (timedelta(minutes=90), "1h 30m"),
        (timedelta(seconds=59), "59s"),
        (timedelta(milliseconds=12), "12ms"),
        (timedelta(), "0s"),
        (timedelta(minutes=-5), "-5m"),
    ],
)
def test_format(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
