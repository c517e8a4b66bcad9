"""``chronod notify test [--channel NAME]…``: send a test event over channels, directly.

It goes straight to the channel (not through the store's outbox), so it works before any daemon
runs, and says per channel what happened in one line, secrets left out. Exit 0 when every channel
took it, 1 otherwise, 2 for an unknown channel.
"""

from __future__ import annotations

import difflib
import sys
from typing import TYPE_CHECKING

import click

from chronod.alerts.channels import DeliveryError, send
from chronod.alerts.events import Notice, sample_event
from chronod.errors import EXIT_FAILURE, UsageError

if TYPE_CHECKING:
    from chronod.cli import Context


@click.group("notify")
def notify_group() -> None:
    """Notification channels ([notify.NAME] in the config)."""


@notify_group.command("test")
@click.option(
    "--channel",
    "names",
    multiple=True,
    metavar="NAME",
    help="a [notify.NAME] channel (repeatable) [default: every channel]",
)
@click.option("--job", default="chronod-test", metavar="NAME", help="the job the event names")
@click.pass_obj
def test_command(ctx: Context, names: tuple[str, ...], job: str) -> None:
    """Send a test event (a made-up failure, marked as a test) over channels."""
    from chronod.runtime import node_name

    config = ctx.config()
    channels = config.channels
    if not channels:
        raise UsageError(f"{config.path} declares no channel: add a [notify.NAME] table")
    for name in names:
        if name not in channels:
            hint = difflib.get_close_matches(name, list(channels), n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise UsageError(f"unknown channel {name!r}{extra} (channels: {', '.join(channels)})")
    event = sample_event(job, ctx.clock.now(), node_name())
    failed = 0
    for name in names or tuple(channels):
        channel = channels[name]
        try:
            send(
                channel,
                Notice(event=event, test=True),
                smtp=config.daemon.smtp,
                sender=config.daemon.mail_from,
            )
        except DeliveryError as exc:
            failed += 1
            click.echo(f"{name}: not delivered ({channel.describe()}): {exc}")
        else:
            click.echo(f"{name}: delivered ({channel.describe()}), id {event.event_id}")
    if failed:
        sys.exit(EXIT_FAILURE)
