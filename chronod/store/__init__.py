"""State stores: one contract (:mod:`chronod.store.base`), SQLite and Redis implementations.

:func:`open_store` turns a store URL (DESIGN §5) into a :class:`Store`:

* ``sqlite:///var/lib/chronod/state.db`` — absolute path; ``sqlite:state.db`` — relative to the
  config file; default ``.chronod/state.db`` beside the config file (:func:`default_sqlite_path`);
* ``redis://…``, ``rediss://…`` (TLS), ``unix://…`` — a Redis server;
* ``redis+sentinel://[:password@]host:26379,host2:26379/service_name/db`` — via Sentinel.

Store URLs may hold passwords: only :func:`redact_url` output is ever logged or shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from chronod.clock import Clock
from chronod.errors import StoreConfigError
from chronod.store.base import Store

SCHEMES = ("sqlite", "redis", "rediss", "unix", "redis+sentinel")


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    url: str | None  # None: the default SQLite location
    config_dir: Path
    namespace: str = "chronod"
    history: int = 100


def default_sqlite_path(config_dir: Path) -> Path:
    """The store of a config that names none: ``.chronod/state.db`` beside the config file.

    A function of where the config is and of nothing else, so every process that reads the same
    file (a daemon under systemd or supervisord, a command typed in a shell, the web page) opens
    the same store. The environment never moves it: a default that followed, say, systemd's
    ``$STATE_DIRECTORY`` put the daemon's state where no shell looks (docs/operations.md).
    """
    return config_dir / ".chronod" / "state.db"


def refuse_default_under_service(
    settings: StoreSettings, environ: Mapping[str, str] | None = None
) -> None:
    """Refuse the default store in a process a service manager gave a state directory.

    Under systemd (``StateDirectory=``, exported as ``$STATE_DIRECTORY``) a config without
    ``[chronod] store`` would put the state beside the config, usually read-only ``/etc``; older
    releases used the state directory instead, which shells never saw. Either way the answer is
    to name the store in the config, where every process reads it; this says so, with the path a
    former default used, so an upgrade keeps its state.
    """
    state_dir = (os.environ if environ is None else environ).get("STATE_DIRECTORY", "")
    if settings.url is not None or not state_dir:
        return
    suggested = Path(state_dir.split(":")[0]) / "chronod.db"  # several are ':'-separated
    raise StoreConfigError(
        f"the config in {settings.config_dir} names no store, and a service's state must not "
        f'depend on its environment: set [chronod] store = "sqlite://{suggested}" there (or a '
        "Redis URL), so that commands typed in a shell open the same store"
    )


def sqlite_path(url: str | None, config_dir: Path) -> Path:
    """The database file a ``sqlite:`` URL (or the default) names."""
    if url is None:
        return default_sqlite_path(config_dir)
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        return Path("/" + rest[3:].lstrip("/"))
    if rest.startswith("//"):
        raise StoreConfigError(
            f"store URL {url!r}: use sqlite:///absolute/path or sqlite:relative/path (no host)"
        )
    if not rest:
        raise StoreConfigError("store URL 'sqlite:' names no file")
    path = Path(rest)
    return path if path.is_absolute() else config_dir / path


def scheme_of(url: str) -> str:
    match = re.match(r"^([a-z][a-z0-9+.-]*):", url)
    if match is None or match.group(1) not in SCHEMES:
        raise StoreConfigError(
            f"store URL {redact_url(url)!r}: unknown scheme; use one of "
            + ", ".join(f"{s}:" for s in SCHEMES)
        )
    return match.group(1)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (the only form of a store URL we print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True, kw_only=True)
class SentinelTarget:
    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[user:password@]h1:26379,h2:26379/service_name[/db]``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.partition(":")
        if not host:
            raise StoreConfigError(f"store URL {redact_url(url)!r}: empty sentinel host")
        try:
            hosts.append((host, int(port) if port else 26379))
        except ValueError:
            raise StoreConfigError(f"store URL {redact_url(url)!r}: bad port {port!r}") from None
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise StoreConfigError(
            f"store URL {redact_url(url)!r}: expected /service_name or /service_name/db "
            "after the hosts"
        )
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise StoreConfigError(f"store URL {redact_url(url)!r}: db must be a number") from None
    return SentinelTarget(
        hosts=tuple(hosts),
        service=unquote(path[0]),
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def open_store(
    settings: StoreSettings, clock: Clock | None = None, *, create: bool = True
) -> Store:
    """Build the store ``settings`` names. Connects lazily; raises StoreConfigError on a bad URL.

    ``create=False`` is for commands that must not create state (``status``, ``history``, the
    steering commands): a SQLite database that does not exist raises
    :class:`~chronod.errors.StoreMissing` on first use instead of being created, and one written
    by an older chronod is read as it is, not migrated. (Reading a Redis store creates nothing.)
    """
    url = settings.url
    refuse_default_under_service(settings)
    if url is None or scheme_of(url) == "sqlite":
        from chronod.store.sqlite import SQLiteStore

        return SQLiteStore(
            sqlite_path(url, settings.config_dir),
            history=settings.history,
            clock=clock,
            create=create,
        )
    from chronod.store.redis import RedisStore

    return RedisStore.from_url(url, namespace=settings.namespace, history=settings.history)
