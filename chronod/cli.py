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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from chronod import __version__, ops
from chronod.alerts.command import notify_group
from chronod.alerts.shown import channel_lines
from chronod.celery.commands import import_group, require_celery
from chronod.clock import Clock, SystemClock
from chronod.config import Config, JobConfig, config_path, load_config, parse_instant
from chronod.durations import format_duration
from chronod.errors import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ChronodError,
    ConfigError,
    StoreMissing,
    UsageError,
)
from chronod.logs import configure as configure_logs
from chronod.preview import (
    Upcoming,
    as_json,
    job_lines,
    local_text,
    overview_lines,
    table,
    upcoming,
)
from chronod.store.base import RunRecord, RunState, Store
from chronod.tz import Zone, get_zone

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


def _metrics_address(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    from chronod.metrics import parse_address

    try:
        return None if value is None else parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


metrics_option = click.option(
    "--metrics",
    "metrics_address",
    metavar="HOST:PORT",
    callback=_metrics_address,
    help="serve Prometheus metrics at http://HOST:PORT/metrics (':PORT': all interfaces)",
)


@cli.command("run")
@click.option(
    "--workers",
    type=click.IntRange(0, 1024),
    default=None,
    help="embedded worker pool size; 0 = scheduler only [default: [chronod] workers]",
)
@metrics_option
@pass_context
def run_command(ctx: Context, workers: int | None, metrics_address: tuple[str, int] | None) -> None:
    """Run the scheduler (leader election) and a local worker pool."""
    from chronod.daemon import Daemon, DaemonStores
    from chronod.metrics import serving
    from chronod.runtime import store_settings
    from chronod.worker import embedded_pool_factory

    config = ctx.config()
    with serving(metrics_address) as metrics:
        daemon = Daemon(
            config=config,
            stores=DaemonStores.open(store_settings(config, ctx.store_override), ctx.clock),
            clock=ctx.clock,
            pool_factory=embedded_pool_factory(workers, ctx.store_override),
            metrics=metrics,
        )
        daemon.install_signals()
        code = daemon.run()
    sys.exit(code)


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
@metrics_option
@pass_context
def worker_command(
    ctx: Context,
    concurrency: int | None,
    queues: tuple[str, ...],
    metrics_address: tuple[str, int] | None,
) -> None:
    """Run a worker pool only: execute the runs dispatched to the given queues."""
    from chronod.metrics import serving
    from chronod.worker import serve

    config = ctx.config()
    with serving(metrics_address) as metrics:
        code = serve(
            config, ctx.store_override, concurrency=concurrency, queues=queues, metrics=metrics
        )
    sys.exit(code)


@cli.command("web")
@click.option(
    "--bind",
    metavar="ADDR",
    default="127.0.0.1:8750",
    show_default=True,
    help="HOST:PORT to serve on; keep it on loopback unless a proxy guards it",
)
@pass_context
def web_command(ctx: Context, bind: str) -> None:
    """Serve the web page: timeline, jobs, history, cluster; actions need web_token."""
    from chronod.web import serve

    ctx.config()  # a broken config is reported like everywhere else, before anything binds
    sys.exit(serve(ctx.config_file, ctx.store_override, bind, ctx.clock))


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
    for line in job_lines(*rows[0]) if job_name else overview_lines(rows):
        click.echo(line)


@cli.command("check")
@pass_context
def check_command(ctx: Context) -> None:
    """Validate the config: exit 0, or 2 with every error located."""
    try:
        config = ctx.config()
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(issue.format(), err=True)
        if any(issue.where for issue in exc.issues):  # not for a missing file: one line says it
            noun = "error" if len(exc.issues) == 1 else "errors"
            click.echo(f"{ctx.config_file}: {len(exc.issues)} {noun}", err=True)
        sys.exit(EXIT_USAGE)
    from chronod.store import check_store_url

    check_store_url(ctx.store_override)  # --store / CHRONOD_STORE: StoreConfigError, exit 2
    require_celery(config)  # celery jobs on a host without Celery: exit 2, saying so
    kinds = Counter(job.kind for job in config.jobs.values())
    noun = "job" if len(config.jobs) == 1 else "jobs"
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    click.echo(f"{config.path}: OK, {len(config.jobs)} {noun} ({detail})")


@cli.command("status")
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
@pass_context
def status_command(ctx: Context, as_json_output: bool) -> None:
    """Show the leader, workers, queue depths and every job's last outcome and next fire."""
    config = ctx.config()
    with _open_store(ctx, config, create=False) as store:
        now = store.now()
        try:
            status = ops.cluster_status(store, config, now)
        except StoreMissing:
            status = ops.missing_store_status(store, config, now)
    if as_json_output:
        click.echo(json.dumps(ops.status_json(status), indent=2))
        return
    for line in status_lines(status):
        click.echo(line)


@cli.command("history")
@click.option("--job", "job_name", metavar="NAME", required=True, help="the job")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=20,
    show_default=True,
    help="finished runs to show, newest first",
)
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
@pass_context
def history_command(ctx: Context, job_name: str, limit: int, as_json_output: bool) -> None:
    """Show a job's runs: slot, attempt, outcome, duration, exit code, worker and output tail."""
    config = ctx.config()
    missing = False
    with _open_store(ctx, config, create=False) as store:
        try:
            if job_name not in config.jobs and job_name not in store.job_states():
                _job(config, job_name)  # raises the usual "no job named ..." usage error
            history = ops.job_history(store, job_name, limit, config)
        except StoreMissing:
            missing = True
            history = ops.JobHistory(job=job_name, config=_job(config, job_name), live=(), runs=())
        now = store.now()
        where = store.describe()
    if as_json_output:
        click.echo(json.dumps(ops.history_json(history), indent=2))
        return
    for line in history_lines(history, now):
        click.echo(line)
    if missing:
        click.echo(f"note: store {where} does not exist: no chronod process has used it")


force_option = click.option(
    "--force",
    is_flag=True,
    help="act even though no scheduler has loaded the job on this store (e.g. pause a new job "
    "before its first load); creates the store if it does not exist",
)


@cli.command("trigger")
@click.option("--job", "job_name", metavar="NAME", required=True, help="the job")
@click.option("--json", "as_json_output", is_flag=True, help="print the run as JSON")
@force_option
@pass_context
def trigger_command(ctx: Context, job_name: str, as_json_output: bool, force: bool) -> None:
    """Run a job once now, through its normal queue (consumes no schedule slot)."""
    config = ctx.config()
    job = _job(config, job_name)
    with _open_store(ctx, config, create=force) as store:
        run = ops.trigger(store, job, force=force)
    if as_json_output:
        click.echo(json.dumps(ops.run_json(run), indent=2))
        return
    where = "waiting behind the active run" if run.state is RunState.WAITING else "queued"
    click.echo(f"triggered {job.name}: run {run.run_id} {where} on queue {run.queue!r}")


@cli.command("pause")
@click.option("--job", "job_name", metavar="NAME", required=True, help="the job")
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
@force_option
@pass_context
def pause_command(ctx: Context, job_name: str, as_json_output: bool, force: bool) -> None:
    """Pause a job: its slots pass without running until it is resumed (persists)."""
    config = ctx.config()
    job = _job(config, job_name)
    with _open_store(ctx, config, create=force) as store:
        change = ops.pause(store, job.name, force=force)
    if as_json_output:
        click.echo(json.dumps(ops.pause_json(change), indent=2))
    elif change.changed:
        click.echo(
            f"paused {job.name}: its slots pass without running "
            f"until 'chronod resume --job {job.name}'"
        )
    else:
        click.echo(f"{job.name} was already paused")


@cli.command("resume")
@click.option("--job", "job_name", metavar="NAME", required=True, help="the job")
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
@force_option
@pass_context
def resume_command(ctx: Context, job_name: str, as_json_output: bool, force: bool) -> None:
    """Resume a paused job from now on (slots of the paused period do not run)."""
    config = ctx.config()
    job = _job(config, job_name)
    with _open_store(ctx, config, create=force) as store:
        change = ops.resume(store, job.name, force=force)
        now = store.now()
    if as_json_output:
        click.echo(json.dumps(ops.pause_json(change), indent=2))
        return
    fire = ops.next_fire(job, change.state.watermark, now)
    upcoming_text = "no upcoming fires" if fire is None else f"next fire {_when(fire, now)}"
    if change.changed:
        click.echo(f"resumed {job.name}: {upcoming_text}")
    else:
        click.echo(f"{job.name} was not paused; {upcoming_text}")


# --------------------------------------------------------------------------------------------------
# status and history as text (the JSON shapes are documented in chronod.ops.shapes)

OUTPUT_LINES = 5  # output tail lines shown under each run by `history` (JSON has the whole tail)
_SECOND = timedelta(seconds=1)


def status_lines(status: ops.ClusterStatus) -> list[str]:
    """``chronod status`` for humans: header (the store's warnings, if any, right under the
    store), schedulers, workers, queues and jobs tables, then notes."""
    header = [["store", status.store]]
    header += [["warning", text] for text in status.warnings]
    lines = table([*header, ["leader", _leader_text(status.leader)]])
    lines.append("")
    if status.schedulers:
        grid = [["SCHEDULER", "ROLE", "SEEN"]]
        grid += [[s.node, s.role, "-" if s.age is None else _ago(s.age)] for s in status.schedulers]
        lines += table(grid)
    else:
        lines.append("schedulers: none seen in the last minute")
    lines.append("")
    if status.workers:
        grid = [["WORKER", "QUEUES", "SEEN", "RUNNING"]]
        grid += [
            [
                w.worker,
                ",".join(w.queues),
                f"stopped {_ago(w.age)}" if w.stopped else _ago(w.age),
                "-" if w.stopped else f"{w.running}/{w.concurrency}",
            ]
            for w in status.workers
        ]
        lines += table(grid)
    else:
        lines.append("workers: none seen in the last minute")
    lines.append("")
    lines += table([["QUEUE", "QUEUED"], *([q, str(n)] for q, n in status.queues.items())])
    lines.append("")
    head = ["JOB", "KIND", "SCHEDULE", "ZONE", "PAUSED", "ACTIVE", "MISSED", "LAST", "LAST OK"]
    lines += table([[*head, "NEXT"], *(_job_row(job, status.now) for job in status.jobs)])
    lines += _job_notes(status.jobs)
    return lines + channel_lines(status, _ago)


def history_lines(history: ops.JobHistory, now: datetime) -> list[str]:
    """``chronod history`` for humans: live runs, then finished ones, each with its output tail."""
    job = history.config
    title = f"{history.job}: retired (no longer in the config)"
    if job is not None:
        title = f"{history.job}: {job.schedule.describe()} ({job.timezone})"
    runs = ops.by_slot([*history.live, *history.runs])
    if not runs:
        return [title, "  no runs recorded yet"]
    zone = job.schedule.zone if job is not None else get_zone("UTC")
    head = ["SLOT", "ATTEMPT", "OUTCOME", "DURATION", "EXIT", "WORKER", "FINISHED"]
    header, *rows = table([head, *(_run_row(run, zone, now) for run in runs)])
    lines = [f"{title}, newest first", header]
    for line, run in zip(rows, runs, strict=True):
        lines.append(line)
        lines += _run_details(run)
    return lines


def _leader_text(leader: ops.LeaderStatus | None) -> str:
    if leader is None:
        return "none (no scheduler holds the lease; nothing is being dispatched)"
    left = format_duration(_whole_seconds(leader.lease_left))
    return f"{leader.node}, epoch {leader.epoch}, lease {left} left"


def _job_row(job: ops.JobStatus, now: datetime) -> list[str]:
    state = job.state
    last = "-"
    if state is not None and state.last_outcome is not None and state.last_outcome_at is not None:
        last = f"{state.last_outcome.value} {_ago(now - state.last_outcome_at)}"
    last_ok = "-"
    if state is not None and state.last_success_at is not None:
        last_ok = _ago(now - state.last_success_at)
    config = job.config
    return [
        job.name,
        "-" if config is None else config.kind,
        "(retired)" if config is None else config.schedule.describe(),
        "-" if config is None else config.timezone,
        "yes" if job.paused else "no",
        str(state.active if state else 0),
        str(state.missed if state else 0),
        last,
        last_ok,
        _next_text(job, now),
    ]


def _next_text(job: ops.JobStatus, now: datetime) -> str:
    if job.next_fire is not None:
        return _when(job.next_fire, now)
    return "finished" if job.finished else "-"


def _job_notes(jobs: tuple[ops.JobStatus, ...]) -> list[str]:
    notes = []
    for job in jobs:
        if job.next_fire is not None and job.next_fire.note:
            notes.append(f"note: {job.name}: {job.next_fire.note}")
        if not job.retired and not job.loaded:
            notes.append(
                f"note: {job.name}: this definition is not loaded by a scheduler yet "
                "(new or edited since its last load or reload)"
            )
    return notes


def _run_row(run: RunRecord, zone: Zone, now: datetime) -> list[str]:
    slot = _local(run.slot, zone) + (" (manual)" if run.manual else "")
    finished = "-" if run.finished_at is None else _ago(now - run.finished_at)
    return [
        slot,
        f"{run.attempt}/{run.max_attempts}",
        run.state.value,
        "-" if run.duration is None else format_duration(run.duration),
        "-" if run.exit_code is None else str(run.exit_code),
        run.worker or "-",
        finished,
    ]


def _run_details(run: RunRecord) -> list[str]:
    """The error (or why it did not run) and the last output lines of ``run``, indented under
    its row."""
    lines = ops.run_notes(run)  # the upstream run, the error or why it did not run
    output = run.output.rstrip("\n").splitlines()
    if len(output) > OUTPUT_LINES:
        hidden = len(output) - OUTPUT_LINES
        lines.append(f"    | ... {hidden} earlier lines (--json shows the whole tail)")
    lines += [f"    | {text}".rstrip() for text in output[-OUTPUT_LINES:]]
    return lines


def _local(instant: datetime, zone: Zone) -> str:
    return local_text(Upcoming(job="", at=instant, local=zone.to_local(instant), note=None))


def _when(fire: Upcoming, now: datetime) -> str:
    """``Fri 2026-11-27 17:30 CET (in 2h 5m)``."""
    delta = fire.at - now
    relative = "now" if abs(delta) < _SECOND else f"in {format_duration(_whole_seconds(delta))}"
    return f"{local_text(fire)} ({relative})"


def _ago(age: timedelta) -> str:
    """``3m 12s ago``; whole seconds, because sub-second ages are noise to a human."""
    if age < _SECOND:
        return "just now"
    return f"{format_duration(_whole_seconds(age))} ago"


def _whole_seconds(delta: timedelta) -> timedelta:
    return timedelta(seconds=delta // _SECOND)


def _open_store(ctx: Context, config: Config, *, create: bool) -> Store:
    """The store ``config`` (or ``--store``) names; ``create=False`` for commands that must not
    create state (a SQLite file that does not exist then raises StoreMissing on first use)."""
    from chronod.runtime import store_settings
    from chronod.store import open_store

    return open_store(store_settings(config, ctx.store_override), ctx.clock, create=create)


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
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--after: {exc}, got {text!r}") from None


cli.add_command(notify_group)  # `chronod notify test` (chronod.alerts)
cli.add_command(import_group)  # `chronod import celery APP` (chronod.celery)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"chronod: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the click group and turns errors into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="chronod", standalone_mode=False)
    except click.UsageError as exc:
        # One line, like every other error (click's own form is usage, hint, blank, error).
        command = exc.ctx.command_path if exc.ctx is not None else "chronod"
        fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted")
    except ChronodError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
