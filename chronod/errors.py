"""The one exception hierarchy of chronod.

Every error a user can cause or meet derives from :class:`ChronodError` and carries the exit code
the CLI maps it to. Only subclasses of :class:`TransientError` are ever retried.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class ChronodError(Exception):
    """Base of every error chronod raises on purpose; ``str(err)`` is one clear line."""

    exit_code: int = EXIT_FAILURE


class UsageError(ChronodError):
    """The command line asked for something impossible (unknown job, bad ``--after`` …)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, kw_only=True)
class ConfigIssue:
    """One located problem in a config file.

    ``where`` is ``LINE:COL`` for syntax errors and a dotted key path (``jobs.digest.cron``) for
    semantic ones; :meth:`format` renders the two shapes promised by ``chronod check``. It is empty
    for a problem with the file as a whole, which has no place inside it.
    """

    file: str
    where: str
    message: str
    syntax: bool = False

    def format(self) -> str:
        if not self.where:  # about the file as a whole (missing, unreadable, too large)
            return f"{self.file}: {self.message}"
        if self.syntax:
            return f"{self.file}:{self.where}: {self.message}"
        return f"{self.file}: {self.where}: {self.message}"


class ConfigError(ChronodError):
    """The config file is unreadable or invalid; holds every issue found in one pass."""

    exit_code = EXIT_USAGE

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        first = issues[0].format() if issues else "invalid configuration"
        more = f" (and {len(issues) - 1} more; run 'chronod check')" if len(issues) > 1 else ""
        super().__init__(first + more)


class ScheduleError(ChronodError):
    """A schedule definition that cannot be evaluated (raised while building it from config)."""

    exit_code = EXIT_USAGE


class StoreError(ChronodError):
    """The state store refused or failed an operation."""


class TransientError(StoreError):
    """A failure worth retrying (connection refused, timeout, ``SQLITE_BUSY`` past the timeout,
    a full disk)."""


class StoreUnavailable(TransientError):
    """The store cannot be reached right now."""


class StoreMissing(StoreError):
    """A command that must not create state found no store where it looked (SQLite: no database
    file there). Read-only commands report it as "nothing has used this store"; steering commands
    refuse to act on it."""


class JobNotLoaded(ChronodError):
    """A steering action (trigger, pause, resume) was refused: no scheduler has ever loaded the job
    on the store it opened, so acting there would change nothing any daemon reads."""


class StoreDiskError(TransientError):
    """The store answers but its storage failed an operation: disk full, an I/O error, a
    read-only file or file system.

    The failed transaction rolled back, so the state on disk is the last committed one; the same
    operation succeeds once an operator frees space or fixes the mount. Reads usually go on.
    """


class StoreCorrupt(StoreError):
    """The store holds something chronod cannot use: a corrupt, truncated or empty file, or a
    database that is not chronod's. Never retried: an operator has to act (the message says how).
    """


class StoreConfigError(StoreError):
    """The store URL is malformed or names an unsupported scheme."""

    exit_code = EXIT_USAGE


class NotLeader(StoreError):
    """A leader-only write was refused because the caller's lease (token, epoch) is not current."""
