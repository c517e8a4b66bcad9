"""The command line: ``chronod [--config PATH] [--store URL] COMMAND``.

This is the edge where errors become one clear line and an exit code (0 ok, 1 runtime failure,
2 usage/config error). Commands build their objects from the parsed config and pass them down;
nothing is global.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from chronod import __version__
from chronod.clock import Clock, SystemClock
from chronod.config import Config, JobConfig, config_path, load_config, parse_instant
from chronod.errors import EXIT_FAILURE, EXIT_USAGE, ChronodError, ConfigError, UsageError
from chronod.instants import format_utc
from chronod.logs import configure as configure_logs
from chronod.preview import as_json, local_text, relative_text, table, upcoming

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """What every command receives: where the config is, the store override, and the clock."""

    config_file: Path
    store_override: str | None
    clock: Clock

    def config(self) -> Config:
        return load_config(self.config_file)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    envvar="CHRONOD_CONFIG",
    help="schedules file [env CHRONOD_CONFIG; default ./schedules.toml]",
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="CHRONOD_STORE",
    help="state store URL, overrides [chronod] store [env CHRONOD_STORE]",
)
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default="human",
    envvar="CHRONOD_LOG_FORMAT",
    show_default=True,
    help="log lines on stderr",
)
@click.version_option(__version__, prog_name="chronod")
@click.pass_context
def cli(
    ctx: click.Context, config_file: str | None, store_url: str | None, log_format: str
) -> None:
    """chronod: cron for more than one host."""
    configure_logs("json" if log_format == "json" else "human")
    ctx.obj = Context(
        config_file=config_path(config_file), store_override=store_url, clock=SystemClock()
    )


@cli.command("run")
@click.option(
    "--workers",
    type=click.IntRange(0, 1024),
    default=None,
    help="embedded worker pool size; 0 = scheduler only [default: [chronod] workers]",
)
@pass_context
def run_command(ctx: Context, workers: int | None) -> None:
    """Run the scheduler (leader election) and a local worker pool."""
    from chronod.daemon import Daemon
    from chronod.worker import embedded_pool_factory

    config = ctx.config()
    daemon = Daemon(
        config=config,
        config_file=ctx.config_file,
        store_override=ctx.store_override,
        clock=ctx.clock,
        pool_factory=embedded_pool_factory(workers, ctx.store_override),
    )
    daemon.install_signals()
    sys.exit(daemon.run())


@cli.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="worker processes, one run each at a time [default: number of CPUs]",
)
@click.option(
    "--queue",
    "queues",
    metavar="Q",
    multiple=True,
    help="queue to take runs from; repeat for several [default: default]",
)
@pass_context
def worker_command(ctx: Context, concurrency: int | None, queues: tuple[str, ...]) -> None:
    """Run a worker pool only: execute the runs dispatched to the given queues."""
    from chronod.worker import serve

    sys.exit(serve(ctx.config(), ctx.store_override, concurrency=concurrency, queues=queues))


@cli.command("next")
@click.option("--job", "job_name", metavar="NAME", help="only this job")
@click.option(
    "--count",
    type=click.IntRange(1, 10_000),
    default=None,
    help="fires to show [default: 5 with --job, else 1 per job]",
)
@click.option(
    "--after",
    metavar="ISO",
    help="start after this instant; without an offset it is the job's local time",
)
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
@pass_context
def next_command(
    ctx: Context, job_name: str | None, count: int | None, after: str | None, as_json_output: bool
) -> None:
    """Show upcoming fires, with the daemon's exact rules (no store needed)."""
    config = ctx.config()
    jobs = [_job(config, job_name)] if job_name else list(config.jobs.values())
    per_job = count or (5 if job_name else 1)
    now = ctx.clock.now()
    rows = []
    for job in jobs:
        start = _after(after, job) if after else now
        rows.append((job, start, upcoming(job, start, per_job)))
    if as_json_output:
        click.echo(json.dumps([item for _, _, ups in rows for item in as_json(ups)], indent=2))
        return
    if job_name:
        job, start, ups = rows[0]
        click.echo(f"{job.name}: {job.schedule.describe()} ({job.timezone})")
        if not ups:
            click.echo("  no upcoming fires")
        lines = table([[local_text(u), format_utc(u.at), relative_text(u, start)] for u in ups])
        for line, u in zip(lines, ups, strict=True):
            click.echo(f"  {line}")
            if u.note:
                click.echo(f"      note: {u.note}")
        return
    grid = [["JOB", "NEXT (local)", "UTC", "", "SCHEDULE"]]
    notes: list[str] = []
    for job, start, ups in rows:
        for u in ups:
            grid.append(
                [
                    job.name,
                    local_text(u),
                    format_utc(u.at),
                    relative_text(u, start),
                    job.schedule.describe(),
                ]
            )
            if u.note:
                notes.append(f"{job.name}: {u.note}")
        if not ups:
            grid.append([job.name, "-", "-", "no upcoming fires", job.schedule.describe()])
    for line in table(grid):
        click.echo(line)
    for note in notes:
        click.echo(f"note: {note}")


@cli.command("check")
@pass_context
def check_command(ctx: Context) -> None:
    """Validate the config: exit 0, or 2 with every error located."""
    try:
        config = ctx.config()
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(issue.format(), err=True)
        noun = "error" if len(exc.issues) == 1 else "errors"
        click.echo(f"{ctx.config_file}: {len(exc.issues)} {noun}", err=True)
        sys.exit(EXIT_USAGE)
    kinds = Counter(job.kind for job in config.jobs.values())
    noun = "job" if len(config.jobs) == 1 else "jobs"
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    click.echo(f"{config.path}: OK, {len(config.jobs)} {noun} ({detail})")


# --------------------------------------------------------------------------------------------------
# helpers


def _job(config: Config, name: str) -> JobConfig:
    try:
        return config.jobs[name]
    except KeyError:
        known = ", ".join(sorted(config.jobs)) or "none"
        raise UsageError(f"no job named {name!r} in {config.path} (jobs: {known})") from None


def _after(text: str, job: JobConfig) -> datetime:
    try:
        return parse_instant(text, job.schedule.zone)
    except (TypeError, ValueError):
        raise UsageError(f"--after: expected an ISO 8601 date-time, got {text!r}") from None


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"chronod: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the click group and turns errors into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="chronod", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted")
    except ChronodError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
