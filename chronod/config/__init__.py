"""``schedules.toml`` → frozen dataclasses, with every problem located in one pass.

The time semantics of what it reads: docs/design.md §2; its error collection and bounds:
docs/config.md.

Layout::

    [chronod]            # daemon settings: store, lease, namespace, workers, drain_timeout, …
    [defaults]           # any job key that makes sense for many jobs (timezone, queue, retries, …)
    [jobs.NAME]          # one table per job: exactly one schedule kind, exactly one of command/call

The package, by concern: :mod:`~chronod.config.model` (what a config is),
:mod:`~chronod.config.loader` (the file and its syntax), :mod:`~chronod.config.reader` (the
checks, every problem located), :mod:`~chronod.config.parsers` (one value each) and
:mod:`~chronod.config.shared` (what the jobs of one load share). Import from here.
"""

from __future__ import annotations

from chronod.config.loader import MAX_FILE_BYTES, load_config, parse_config
from chronod.config.model import (
    DEFAULT_CONFIG,
    Catchup,
    Config,
    DaemonConfig,
    JobConfig,
    JSONValue,
    config_path,
    unused_queues,
)
from chronod.config.parsers import (
    CALL_TARGET,
    JOB_NAME,
    MAX_DEPTH,
    MAX_TEXT,
    MIN_GRACE,
    NAMESPACE,
    QUEUE_NAME,
    parse_instant,
)
from chronod.config.reader import (
    DAEMON_KEYS,
    DEFAULTABLE_KEYS,
    JOB_KEYS,
    JOB_ONLY_KEYS,
    SCHEDULE_KINDS,
    SOLAR_KEYS,
)
from chronod.store.base import Overlap

__all__ = [
    "CALL_TARGET",
    "DAEMON_KEYS",
    "DEFAULTABLE_KEYS",
    "DEFAULT_CONFIG",
    "JOB_KEYS",
    "JOB_NAME",
    "JOB_ONLY_KEYS",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_TEXT",
    "MIN_GRACE",
    "NAMESPACE",
    "QUEUE_NAME",
    "SCHEDULE_KINDS",
    "SOLAR_KEYS",
    "Catchup",
    "Config",
    "DaemonConfig",
    "JSONValue",
    "JobConfig",
    "Overlap",
    "config_path",
    "load_config",
    "parse_config",
    "parse_instant",
    "unused_queues",
]
