"""What a notification channel and a job's notification settings are: frozen values.

Secrets (webhook URLs, which often carry a token in their path; HMAC secrets; ping URLs, whose
UUID is the check's only credential) are kept out of ``repr`` so that no log line or traceback
shows them; :meth:`Channel.describe` is the rendering that may be shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from chronod.alerts.urls import redact_url

if TYPE_CHECKING:
    from chronod.config.model import JobConfig

ChannelKind = Literal["webhook", "email", "command"]
WebhookFormat = Literal["json", "slack"]

# What ``notify_on`` may name: the outcomes worth telling someone about (docs/design.md §4), and
# ``recovered``, the first success after a run that was not one.
NOTIFY_ON = (
    "failed",
    "timed-out",
    "lost",
    "missed",
    "config-mismatch",
    "uncertain",
    "quarantined",
    "recovered",
    "succeeded",
)
# Everything that means "the job did not do its work", and the news that it does again. Not
# ``missed`` (``catchup = "none"`` records missed slots on purpose after every outage) and not
# ``succeeded`` (that is what a ``ping`` is for).
DEFAULT_NOTIFY_ON = frozenset(
    ("failed", "timed-out", "lost", "config-mismatch", "uncertain", "quarantined", "recovered")
)
DEFAULT_NOTIFY_EVERY = timedelta(hours=1)
# What a ping reports: an attempt's start (``/start``) and every end of a run (success, or
# ``/fail``).
PING_KINDS = frozenset(
    (
        "started",
        "succeeded",
        "recovered",
        "failed",
        "timed-out",
        "lost",
        "config-mismatch",
        "quarantined",
        "uncertain",
    )
)


@dataclass(frozen=True, kw_only=True)
class Channel:
    """One ``[notify.NAME]`` table: where events go, and how."""

    name: str
    kind: ChannelKind
    url: str | None = field(default=None, repr=False)  # webhook
    format: WebhookFormat = "json"
    secret: str | None = field(default=None, repr=False)  # webhook: HMAC-SHA256 key
    recipients: tuple[str, ...] = ()  # email
    argv: tuple[str, ...] = ()  # command: the event as JSON on stdin

    def describe(self) -> str:
        """The channel as it may be shown: no token, password or secret."""
        if self.kind == "webhook":
            signed = ", signed" if self.secret else ""
            return f"webhook {redact_url(self.url or '')} ({self.format}{signed})"
        if self.kind == "email":
            return "email to " + ", ".join(self.recipients)
        return f"command {self.argv[0] if self.argv else ''}"


@dataclass(frozen=True, kw_only=True)
class JobAlerts:
    """A job's ``notify``, ``notify_on``, ``notify_every`` and ``ping`` (after ``[defaults]``)."""

    notify: tuple[str, ...] = ()
    notify_on: frozenset[str] = DEFAULT_NOTIFY_ON
    notify_every: timedelta = DEFAULT_NOTIFY_EVERY
    ping: str | None = field(default=None, repr=False)

    @property
    def wanted(self) -> bool:
        """Whether any outcome of the job is sent anywhere (a channel, or a ping)."""
        return bool(self.notify) or self.ping is not None

    def sends(self, kind: str) -> bool:
        """Whether an event of ``kind`` (an outcome, or ``recovered``) goes to the channels."""
        return bool(self.notify) and kind in self.notify_on


def kinds_of(alerts: JobAlerts) -> frozenset[str]:
    """The run ends of a job the store writes to the outbox (Store.set_event_kinds)."""
    kinds: set[str] = set()
    if alerts.notify:
        kinds |= alerts.notify_on
        if "succeeded" in alerts.notify_on:
            kinds.add("recovered")  # a success too, of the kind that also is news
    if alerts.ping is not None:
        kinds |= PING_KINDS
    return frozenset(kinds)


def event_kinds(jobs: Mapping[str, JobConfig]) -> dict[str, frozenset[str]]:
    """:func:`kinds_of` every job that has any."""
    return {name: kinds for name, job in jobs.items() if (kinds := kinds_of(job.alerts))}


def channel_wants(alerts: JobAlerts, kind: str) -> bool:
    """Whether the job's channels get an event of ``kind`` (``recovered`` is a success too)."""
    return kind in alerts.notify_on or (kind == "recovered" and "succeeded" in alerts.notify_on)
