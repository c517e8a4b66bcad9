"""Notifications in ``chronod status``: each channel's last delivery and error, the outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from chronod.ops.status import ClusterStatus
from chronod.preview import table


def channel_lines(status: ClusterStatus, ago: Callable[[timedelta], str]) -> list[str]:
    """A CHANNEL table (nothing when no channel was declared or used) and the outbox line."""
    if not status.channels:
        return []

    def when(instant: datetime | None) -> str:
        return "-" if instant is None else ago(status.now - instant)

    grid = [["CHANNEL", "LAST OK", "LAST ERROR"]]
    for channel in status.channels:
        error = "-"
        if channel.last_error is not None:
            error = f"{when(channel.last_error_at)}: {channel.last_error}"
        grid.append([channel.channel, when(channel.last_ok_at), error])
    lines = ["", *table(grid)]
    if status.outbox is not None:
        lines.append(
            f"outbox: {status.outbox.depth} waiting, {status.outbox.dropped} dropped when full"
        )
    return lines
