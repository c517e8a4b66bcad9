"""Reading ``[notify.NAME]``, ``[chronod] smtp``/``from`` and a job's notification keys.

Each problem is reported through ``report(where, reason)`` (the config reader's located issues)
and reading goes on, so that one ``chronod check`` names every mistake. A URL is never quoted
back: it may hold a token or a password (:mod:`chronod.alerts.urls`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from chronod.alerts.model import (
    DEFAULT_NOTIFY_EVERY,
    DEFAULT_NOTIFY_ON,
    NOTIFY_ON,
    Channel,
    ChannelKind,
    JobAlerts,
)
from chronod.alerts.urls import http_url, smtp_url
from chronod.config.parsers import clip, command, duration_at_least, show

Report = Callable[[str, str], None]

CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CHANNEL_KEYS = ("webhook", "format", "secret", "email", "command")
CHANNEL_KINDS = ("webhook", "email", "command")
WEBHOOK_ONLY = ("format", "secret")
EMAIL_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")
MAX_CHANNELS = 100
MAX_RECIPIENTS = 50
NOTIFY_EVERY = duration_at_least(timedelta())


def read_channels(
    table: Mapping[str, Any], report: Report, *, smtp: str | None, sender: str | None
) -> dict[str, Channel]:
    """Every valid ``[notify.NAME]`` channel by name; the invalid ones are reported."""
    if len(table) > MAX_CHANNELS:
        report("notify", f"at most {MAX_CHANNELS} channels")
        return {}
    channels: dict[str, Channel] = {}
    for name, body in table.items():
        where = f"notify.{clip(name)}"
        if not CHANNEL_NAME.match(name) or name == "ping":
            report(
                where,
                "a channel name uses letters, digits, '_', '.', '-' (at most 64) and is not "
                "'ping' (a job's ping URL is reported under that name)",
            )
            continue
        if not isinstance(body, dict):
            report(where, "expected a table like [notify.NAME] with webhook, email or command")
            continue
        channel = _channel(name, body, report, email_ready=bool(smtp and sender))
        if channel is not None:
            channels[name] = channel
    return channels


def _channel(
    name: str, body: dict[str, Any], report: Report, *, email_ready: bool
) -> Channel | None:
    where = f"notify.{name}"
    before = _Counter(report)
    for key in body:
        if key not in CHANNEL_KEYS:
            hint = difflib.get_close_matches(clip(key), CHANNEL_KEYS, n=1, cutoff=0.6)
            extra = (
                f"; did you mean '{hint[0]}'?"
                if hint
                else f"; known keys: {', '.join(CHANNEL_KEYS)}"
            )
            before.report(f"{where}.{clip(key)}", f"unknown key{extra}")
    kinds = [kind for kind in CHANNEL_KINDS if kind in body]
    if len(kinds) != 1:
        found = " and ".join(kinds) if kinds else "none"
        before.report(
            where, f"needs exactly one of 'webhook', 'email' or 'command' (found {found})"
        )
        return None
    kind: ChannelKind = kinds[0]  # type: ignore[assignment]  # one of CHANNEL_KINDS
    for key in WEBHOOK_ONLY:
        if key in body and kind != "webhook":
            before.report(
                f"{where}.{key}", f"only applies to webhook channels, this one uses '{kind}'"
            )
    values: dict[str, Any] = {}
    if kind == "webhook":
        _webhook(where, body, values, before.report)
    elif kind == "email":
        values["recipients"] = _recipients(f"{where}.email", body["email"], before.report)
        if not email_ready:
            before.report(
                f"{where}.email", 'needs [chronod] smtp = "smtp://…" and from = "…" to send mail'
            )
    else:
        try:
            argv = command(body["command"])
        except (TypeError, ValueError) as exc:
            before.report(f"{where}.command", str(exc))
        else:
            values["argv"] = argv if isinstance(argv, tuple) else ("/bin/sh", "-c", argv)
    if before.count:
        return None
    return Channel(name=name, kind=kind, **values)


def _webhook(where: str, body: dict[str, Any], values: dict[str, Any], report: Report) -> None:
    try:
        values["url"] = http_url(body["webhook"])
    except (TypeError, ValueError) as exc:
        report(f"{where}.webhook", str(exc))
    if "format" in body:
        if body["format"] in ("json", "slack"):
            values["format"] = body["format"]
        else:
            report(f"{where}.format", f"expected 'json' or 'slack' (got {show(body['format'])})")
    if "secret" in body:
        secret = body["secret"]
        if isinstance(secret, str) and 16 <= len(secret) <= 1024:
            values["secret"] = secret
        else:  # never quoted back: it is the secret
            report(f"{where}.secret", "expected a string of 16 to 1024 characters")


def _recipients(where: str, value: Any, report: Report) -> tuple[str, ...]:
    addresses = [value] if isinstance(value, str) else value
    if (
        not isinstance(addresses, list)
        or not 1 <= len(addresses) <= MAX_RECIPIENTS
        or not all(isinstance(a, str) and EMAIL_ADDRESS.match(a) for a in addresses)
    ):
        report(
            where,
            f"expected an address or an array of 1 to {MAX_RECIPIENTS} addresses "
            f"(got {show(value)})",
        )
        return ()
    return tuple(addresses)


def check_smtp(table: Mapping[str, Any], report: Report) -> tuple[str | None, str | None]:
    """``[chronod] smtp`` and ``from``, each None when absent or bad (reported, the URL never
    quoted: it may hold a password)."""
    smtp: str | None = None
    sender: str | None = None
    if "smtp" in table:
        try:
            smtp = smtp_url(table["smtp"])
        except (TypeError, ValueError) as exc:
            report("chronod.smtp", str(exc))
    if "from" in table:
        value = table["from"]
        if isinstance(value, str) and EMAIL_ADDRESS.match(
            value.rsplit("<", 1)[-1].rstrip(">").strip()
        ):
            sender = value
        else:
            report(
                "chronod.from",
                f"expected an address like 'chronod@example.org' (got {show(value)})",
            )
    return smtp, sender


def read_job_alerts(
    pick: Callable[[str], Any],
    where: Callable[[str], str],
    channels: Mapping[str, Channel],
    report: Report,
    *,
    declared: Callable[[str], bool],
) -> JobAlerts | None:
    """A job's notification settings (``pick`` reads the job's value or its default, ``where``
    locates it); None after reporting a bad one. ``declared(name)`` says whether a channel name
    was declared at all (a declared but invalid channel is reported at its table, not again)."""
    counter = _Counter(report)
    notify: tuple[str, ...] = ()
    value = pick("notify")
    if value is not None:
        notify = _channel_names(where("notify"), value, channels, counter.report, declared)
    notify_on = DEFAULT_NOTIFY_ON
    value = pick("notify_on")
    if value is not None:
        notify_on = _notify_on(where("notify_on"), value, counter.report)
    every = DEFAULT_NOTIFY_EVERY
    value = pick("notify_every")
    if value is not None:
        try:
            every = NOTIFY_EVERY(value)
        except (TypeError, ValueError) as exc:
            counter.report(where("notify_every"), f"{exc} (got {show(value)})")
    ping: str | None = None
    value = pick("ping")
    if value is not None:
        try:
            ping = http_url(value)
        except (TypeError, ValueError) as exc:
            counter.report(where("ping"), str(exc))
    if counter.count:
        return None
    return JobAlerts(notify=notify, notify_on=notify_on, notify_every=every, ping=ping)


def _channel_names(
    where: str,
    value: Any,
    channels: Mapping[str, Channel],
    report: Report,
    declared: Callable[[str], bool],
) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        report(where, f"expected an array of channel names (got {show(value)})")
        return ()
    for name in names:
        if name in channels or declared(name):
            continue
        hint = difflib.get_close_matches(clip(name), list(channels), n=1, cutoff=0.6)
        known = ", ".join(channels) or "none; declare one as [notify.NAME]"
        extra = f"; did you mean '{hint[0]}'?" if hint else f"; channels: {known}"
        report(where, f"unknown channel {show(name)}{extra}")
    return tuple(dict.fromkeys(names))


def _notify_on(where: str, value: Any, report: Report) -> frozenset[str]:
    kinds = [value] if isinstance(value, str) else value
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        report(where, f"expected an array of outcomes (got {show(value)})")
        return DEFAULT_NOTIFY_ON
    for kind in kinds:
        if kind not in NOTIFY_ON:
            hint = difflib.get_close_matches(str(kind)[:60], NOTIFY_ON, n=1, cutoff=0.6)
            extra = (
                f"; did you mean '{hint[0]}'?"
                if hint
                else f"; expected some of {', '.join(NOTIFY_ON)}"
            )
            report(where, f"unknown outcome {show(kind)}{extra}")
    return frozenset(kinds)


class _Counter:
    """``report`` that counts what it reported, so a reader can tell whether a part was valid."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self.count = 0

    def report(self, where: str, reason: str) -> None:
        self.count += 1
        self._report(where, reason)
