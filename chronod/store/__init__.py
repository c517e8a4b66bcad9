"""State stores: one contract (:mod:`chronod.store.base`), SQLite and Redis implementations.

:func:`open_store` turns a store URL (DESIGN §5) into a :class:`Store`:

* ``sqlite:///var/lib/chronod/state.db`` — absolute path; ``sqlite:state.db`` — relative to the
config
  file; default ``$STATE_DIRECTORY/chronod.db`` under systemd, else ``.chronod/state.db`` beside it;
* ``redis://…``, ``rediss://…`` (TLS), ``unix://…`` — a Redis server;
* ``redis+sentinel://[:password@]host:26379,host2:26379/service_name/db`` — via Sentinel.

Store URLs may hold passwords: only :func:`redact_url` output is ever logged or shown.
"""

from __future__ import annotations

import os
import re
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
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:  # systemd StateDirectory=; several directories are separated by ':'
        return Path(state_dir.split(":")[0]) / "chronod.db"
    return config_dir / ".chronod" / "state.db"


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


def open_store(settings: StoreSettings, clock: Clock | None = None) -> Store:
    """Build the store ``settings`` names. Connects lazily; raises StoreConfigError on a bad URL."""
    url = settings.url
    if url is None or scheme_of(url) == "sqlite":
        from chronod.store.sqlite import SQLiteStore

        return SQLiteStore(
            sqlite_path(url, settings.config_dir), history=settings.history, clock=clock
        )
    from chronod.store.redis import RedisStore

    return RedisStore.from_url(url, namespace=settings.namespace, history=settings.history)
