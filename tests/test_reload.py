"""reload_config: what SIGHUP does to the config, shared by `run` and `worker`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chronod.config import load_config
from chronod.runtime import reload_config

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
