"""reload_config: what SIGHUP does to the config, shared by `run` and `worker`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chronod.config import load_config
from chronod.runtime import ConfigWatcher, reload_config

JOBS = '[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "1m"\ncommand = "true"\n'
LOG = logging.getLogger("chronod.test_reload")


def write(path: Path, chronod: str = "") -> Path:
    path.write_text(f"[chronod]\n{chronod}\n{JOBS}")
    return path


def test_a_valid_file_is_returned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "s.toml")
    running = load_config(path)
    path.write_text(path.read_text().replace('"1m"', '"2m"'))
    with caplog.at_level(logging.INFO, logger=LOG.name):
        config = reload_config(path, running, LOG)
    assert config is not None
    assert config.jobs["a"].fingerprint != running.jobs["a"].fingerprint
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_broken_file_is_refused_with_its_location(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "s.toml")
    running = load_config(path)
    path.write_text(JOBS + '[jobs.b]\nevery = "soon"\ncommand = "true"\n')
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert reload_config(path, running, LOG) is None
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith(
        f"reload refused, keeping the running config: {path}: jobs.b.every: "
    )


def test_changed_daemon_settings_are_named_without_their_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "s.toml", 'store = "redis://:old-secret@h1/0"\nlease = "10s"')
    running = load_config(path)
    write(path, 'store = "redis://:new-secret@h2/0"\nlease = "20s"\nworkers = 3')
    with caplog.at_level(logging.INFO, logger=LOG.name):
        config = reload_config(path, running, LOG)
    assert config is not None  # the jobs are still reloaded
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.endswith("take effect at the next restart: store, lease, workers")
    assert "secret" not in message


# -- ConfigWatcher: the one reload of run, worker and web ------------------------------------------


def edit(path: Path, text: str) -> None:
    """Replace the file as an editor that writes a new file and renames it would (a new inode:
    the stamp changes even within the file system's mtime granularity)."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.replace(path)


def test_the_watcher_reloads_a_changed_file_and_only_then_unless_asked(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml")
    watcher = ConfigWatcher.load(path, LOG)
    assert watcher.reload() is None  # unchanged since it was read
    edit(path, path.read_text().replace('"1m"', '"2m"'))
    changed = watcher.reload()
    assert changed is not None
    assert watcher.config is changed
    assert watcher.reload() is None
    assert watcher.reload(force=True) is not None  # SIGHUP reads it whatever its stamp


def test_a_watcher_given_a_config_reads_the_file_at_its_first_look(tmp_path: Path) -> None:
    """A worker child starts from the text its supervisor accepted, which the file may no longer
    hold: its first look reads the file, whatever its stamp."""
    path = write(tmp_path / "s.toml")
    watcher = ConfigWatcher(load_config(path), LOG)
    assert watcher.reload() is not None
    assert watcher.reload() is None


def test_an_invalid_edit_keeps_the_running_config_until_a_valid_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "s.toml")
    watcher = ConfigWatcher.load(path, LOG)
    running = watcher.config
    edit(path, JOBS + '[jobs.b]\nevery = "soon"\ncommand = "true"\n')
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert watcher.current() == (running, True)
        assert watcher.current() == (running, True)  # reported once, still stale
    [record] = caplog.records
    assert record.getMessage().startswith("reload refused, keeping the running config: ")
    edit(path, JOBS)
    config, stale = watcher.current()
    assert config is not running
    assert not stale


def test_a_quiet_watcher_counts_the_problems_without_quoting_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The web page's process: problem texts quote the offending values, which may be secrets."""
    path = write(tmp_path / "s.toml")
    watcher = ConfigWatcher.load(path, LOG, explain=False, restart_note=False)
    edit(path, JOBS + '[jobs.b]\nevery = "hunter2"\ncommand = "true"\n')
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert watcher.reload() is None
    [record] = caplog.records
    assert (record.levelno, record.getMessage()) == (
        logging.WARNING,
        "config invalid; keeping the last good one",
    )
    assert "hunter2" not in caplog.text
    assert watcher.stale


def test_a_changed_celery_table_needs_no_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Workers publish with the config they reloaded: no "at the next restart" note for it.
    path = write(tmp_path / "s.toml", '[chronod.celery]\nbroker = "redis://h1/0"')
    running = load_config(path)
    write(path, '[chronod.celery]\nbroker = "redis://h2/0"')
    with caplog.at_level(logging.INFO, logger=LOG.name):
        config = reload_config(path, running, LOG)
    assert config is not None
    assert config.daemon.celery != running.daemon.celery
    assert caplog.records == []


def test_the_watcher_reloads_when_an_exclude_file_changes(tmp_path: Path) -> None:
    """A holiday file is part of the config: editing it alone is an edit (workers and the web
    page follow it as they follow schedules.toml)."""
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("2026-12-25\n")
    path = tmp_path / "s.toml"
    path.write_text(
        JOBS.replace('command = "true"', 'command = "true"\nexclude_file = "holidays.txt"')
    )
    watcher = ConfigWatcher.load(path, LOG)
    assert watcher.config.extra_files == (holidays,)
    first = watcher.config.jobs["a"].fingerprint
    assert watcher.reload() is None
    edit(holidays, "2026-12-25\n2026-12-26\n")
    changed = watcher.reload()
    assert changed is not None
    assert changed.jobs["a"].fingerprint != first
    assert watcher.reload() is None
    holidays.unlink()  # a file gone is a change too, and an invalid config: the running one stays
    assert watcher.current() == (changed, True)
