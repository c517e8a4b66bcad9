"""``chronod import celery APP``: the command line of :mod:`chronod.celery.importer`.

A group of its own (``chronod import …``) so that other schedulers' imports can join it; Celery is
imported only when the command runs.
"""

from __future__ import annotations

import sys

import click

from chronod.config import Config
from chronod.errors import EXIT_USAGE


def require_celery(config: Config) -> None:
    """``chronod check``: exit 2 naming each celery job, if Celery is not installed here."""
    from chronod.celery.publish import missing_celery

    missing = missing_celery(config)
    if missing:
        click.echo("\n".join(missing), err=True)
        sys.exit(EXIT_USAGE)


@click.group("import")
def import_group() -> None:
    """Print a schedules.toml converted from another scheduler's configuration."""


@import_group.command("celery")
@click.argument("app")
def import_celery(app: str) -> None:
    """Convert the beat_schedule of the Celery APP (package.module:app) to schedules.toml.

    The file goes to standard output; refused entries are listed in it, and counted on standard
    error."""
    from chronod.celery.publish import INSTALL_HINT, celery_missing

    if celery_missing():
        click.echo(f"chronod: error: {INSTALL_HINT}", err=True)
        sys.exit(EXIT_USAGE)
    from chronod.celery.importer import LoadError, convert, load_app

    try:
        conversion = convert(load_app(app), app)
    except LoadError as exc:
        click.echo(f"chronod: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(conversion.toml(), nl=False)
    if conversion.refused:
        names = ", ".join(refusal.entry for refusal in conversion.refused)
        click.echo(
            f"chronod: {len(conversion.refused)} beat entr"
            f"{'y' if len(conversion.refused) == 1 else 'ies'} refused (see the end of the "
            f"file): {names}",
            err=True,
        )
