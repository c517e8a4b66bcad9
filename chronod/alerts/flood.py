"""Flood control: per job and channel, at most one event per ``notify_every``.

A job failing every 10 s must not send 360 mails an hour. The first event of a job on a channel
goes out; those within ``notify_every`` after it are folded (counted, not sent); the next one sent
carries the count. ``recovered`` always goes out, and starts a new period. The state lives in the
delivering process: after a failover the new leader may send one event early, never one fewer.
"""

from __future__ import annotations

from datetime import datetime, timedelta


class FloodGate:
    def __init__(self) -> None:
        self._sent_at: dict[tuple[str, str], datetime] = {}
        self._folded: dict[tuple[str, str], int] = {}

    def admit(
        self, job: str, channel: str, kind: str, every: timedelta, now: datetime
    ) -> int | None:
        """None: fold this event; else send it, with the number of events folded before it."""
        key = (job, channel)
        last = self._sent_at.get(key)
        if kind != "recovered" and last is not None and now - last < every:
            self._folded[key] = self._folded.get(key, 0) + 1
            return None
        self._sent_at[key] = now
        return self._folded.pop(key, 0)

    def forget(self, keep: set[str]) -> None:
        """Drop the state of jobs no longer configured (bounded by what the config names)."""
        for key in [key for key in self._sent_at if key[0] not in keep]:
            self._sent_at.pop(key, None)
            self._folded.pop(key, None)
