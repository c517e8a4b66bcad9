"""Notifications when jobs fail, and dead-man's-switch pings (docs/notifications.md).

Not :mod:`chronod.notify`, which is systemd's ``sd_notify``. The package, by concern:
:mod:`~chronod.alerts.model` (channels and a job's notification settings, frozen),
:mod:`~chronod.alerts.settings` (reading ``[notify.NAME]`` and the job keys, every problem
located), :mod:`~chronod.alerts.urls` (URL checks and their redacted rendering).
"""

from __future__ import annotations

from chronod.alerts.model import (
    DEFAULT_NOTIFY_EVERY,
    DEFAULT_NOTIFY_ON,
    NOTIFY_ON,
    Channel,
    JobAlerts,
)

__all__ = [
    "DEFAULT_NOTIFY_EVERY",
    "DEFAULT_NOTIFY_ON",
    "NOTIFY_ON",
    "Channel",
    "JobAlerts",
]
