"""State stores: one contract (:mod:`chronod.store.base`); SQLite, Redis and PostgreSQL stores.

:func:`open_store` turns a store URL (docs/design.md §5) into a :class:`Store`:

* ``sqlite:///var/lib/chronod/state.db`` — absolute path; ``sqlite:state.db`` — relative to the
  config file; default ``.chronod/state.db`` beside the config file (:func:`default_sqlite_path`);
* ``redis://…``, ``rediss://…`` (TLS), ``unix://…`` — a Redis server;
* ``redis+sentinel://[:password@]host:26379,host2:26379/service_name/db`` — via Sentinel;
* ``redis+cluster://[:password@]host:6379[,host:port…]``, ``rediss+cluster://…`` — Redis Cluster;
* ``postgresql://user:password@host:5432/db`` (or ``postgres://``) — a PostgreSQL database, its
  tables in the schema ``[chronod] namespace`` names (needs the ``chronod[postgres]`` extra).

Store URLs may hold passwords: only :func:`redact_url` output is ever logged or shown, and every
error about a URL quotes its redacted form and nothing parsed out of it. chronod parses Redis URLs
itself (:func:`parse_redis_url`) instead of handing them to redis-py, so that an unknown query
parameter is refused here, in one line, rather than as a ``TypeError`` at the first connection.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from chronod.clock import Clock
from chronod.errors import StoreConfigError
from chronod.store.base import Store
from chronod.store.postgres.url import POSTGRES_SCHEMES, parse_postgres_url, redact_postgres_url

SCHEMES = (
    "sqlite",
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "redis+cluster",
    "rediss+cluster",
    "postgresql",
    "postgres",
)
RedisKind = Literal["standalone", "unix", "sentinel", "cluster"]
_KIND_OF: dict[str, RedisKind] = {
    "redis": "standalone",
    "rediss": "standalone",
    "unix": "unix",
    "redis+sentinel": "sentinel",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
}
# Query parameters a Redis store URL may carry. Anything else is refused: redis-py would pass an
# unknown one on as a keyword argument and fail at the first connection, in whatever thread.
SECRET_PARAMS = frozenset({"password", "sentinel_password"})
TLS_PARAMS = frozenset(
    {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
)
_CREDENTIALS = frozenset({"username", "password"})
PARAMS: dict[RedisKind, frozenset[str]] = {
    "standalone": _CREDENTIALS | {"db"} | TLS_PARAMS,
    "unix": _CREDENTIALS | {"db"},
    "sentinel": _CREDENTIALS | {"db", "sentinel_username", "sentinel_password"},
    "cluster": _CREDENTIALS | TLS_PARAMS,
}
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_CERT_REQS = ("none", "optional", "required")
# Default [chronod] replica_acks per kind of Redis deployment (see docs/redis.md): a failover
# promotes a replica, so a write counts once one replica has it; a standalone server has none.
DEFAULT_ACKS: dict[RedisKind, int] = {"standalone": 0, "unix": 0, "sentinel": 1, "cluster": 1}
_NO_DRIVER = (
    "store URL {url!r} needs the PostgreSQL driver, which is not installed ({missing}): "
    "pip install 'chronod[postgres]'"
)
ENCODE_HINT = "percent-encode '@', ':', '/', '?', '#' and '&' in a password (e.g. '#' as %23)"


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    url: str | None  # None: the default SQLite location
    config_dir: Path
    namespace: str = "chronod"
    history: int = 100
    replica_acks: int | None = None  # None: the default of the URL's kind (DEFAULT_ACKS)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (worker children receive their settings this way)."""
        return {
            "url": self.url,
            "config_dir": str(self.config_dir),
            "namespace": self.namespace,
            "history": self.history,
            "replica_acks": self.replica_acks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreSettings:
        acks = data.get("replica_acks")
        return cls(
            url=data["url"],
            config_dir=Path(data["config_dir"]),
            namespace=data["namespace"],
            history=int(data["history"]),
            replica_acks=None if acks is None else int(acks),
        )


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
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else None
    if scheme is None or scheme not in SCHEMES:
        raise StoreConfigError(
            f"store URL {redact_url(url)!r}: unknown scheme; use one of "
            + ", ".join(f"{s}:" for s in SCHEMES)
        )
    return scheme


# -- redaction -------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with every credential replaced by ``***`` (the only form of a store URL we print).

    A password may hold characters that end the part of a URL it belongs to when they are not
    percent-encoded ('/', '?', '#', '&', even '@'), so no general URL parser can tell where it
    ends. Hence: a URL without '@', '?' or '#' cannot hold a credential and is shown as it is; a
    Redis URL that chronod's own (strict) parser accepts is rebuilt from what it parsed, with
    the credentials replaced; anything else is shown up to its first '?' or '#' when it has no
    '@', and as its scheme and ``***`` otherwise.
    """
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "sqlite" or not any(c in url for c in "@?#"):
        return url
    if scheme in POSTGRES_SCHEMES:
        return redact_postgres_url(url)
    if scheme in _KIND_OF:
        try:
            return _rebuilt(_parse_redis(url, scheme))
        except _Bad:
            pass
    if scheme and "@" not in url:
        # No user information: a secret can only follow the first '?' or '#'.
        return re.split(r"[?#]", url, maxsplit=1)[0] + "?***"
    return f"{scheme}://***" if scheme else "<store URL>"


def _rebuilt(target: RedisTarget) -> str:
    user = ""
    if target.username or target.password:
        user = f"{quote(target.username or '', safe='')}:***@"
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in target.hosts)
    if target.kind == "unix":
        path = target.path or ""
    elif target.kind == "sentinel":
        path = f"/{quote(target.service or '', safe='')}/{target.db}"
    elif target.kind == "cluster":
        path = ""
    else:
        path = f"/{target.db}"
    query = [f"{name}={quote(value, safe='/')}" for name, value in target.tls_options]
    if target.sentinel_username:
        query.append(f"sentinel_username={quote(target.sentinel_username, safe='')}")
    if target.sentinel_password:
        query.append("sentinel_password=***")
    return f"{target.scheme}://{user}{hosts}{path}" + ("?" + "&".join(query) if query else "")


# -- Redis URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """A parsed Redis store URL: what to connect to and how (credentials never in the repr)."""

    scheme: str
    kind: RedisKind
    hosts: tuple[tuple[str, int], ...] = ()  # the server, the sentinels or the cluster seed nodes
    path: str | None = None  # unix socket
    service: str | None = None  # Sentinel service name
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls_options: tuple[tuple[str, str], ...] = ()

    @property
    def default_acks(self) -> int:
        return DEFAULT_ACKS[self.kind]

    def secrets(self) -> tuple[str, ...]:
        """Every secret the URL holds (to scrub from error texts that might echo one)."""
        return tuple(s for s in (self.password, self.sentinel_password) if s)


class _Bad(Exception):
    """What is wrong with a Redis URL (worded without any part of the URL)."""


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a ``redis``, ``rediss``, ``unix``, ``redis+sentinel`` or ``redis(s)+cluster`` URL.

    Raises :class:`StoreConfigError` naming the redacted URL and what is wrong with it (never a
    fragment of it that could be part of a password).
    """
    scheme = scheme_of(url)
    if scheme not in _KIND_OF:
        raise StoreConfigError(f"store URL {redact_url(url)!r} is not a Redis URL")
    try:
        return _parse_redis(url, scheme)
    except _Bad as exc:
        raise StoreConfigError(f"store URL {redact_url(url)!r}: {exc}") from None


def _parse_redis(url: str, scheme: str) -> RedisTarget:
    kind = _KIND_OF[scheme]
    rest = url[len(scheme) + 1 :]
    if not rest.startswith("//"):
        raise _Bad(f"expected {scheme}://")
    rest = rest[2:]
    if "#" in rest:
        raise _Bad(f"a '#' ends a URL; {ENCODE_HINT}")
    head, _, query = rest.partition("?")
    userinfo = ""
    if "@" in head:
        userinfo, head = head.rsplit("@", 1)
    params = _query_params(query, kind, _Bad)
    username, password = _credentials(userinfo, kind)
    location, slash, path = head.partition("/")
    target: dict[str, Any] = {
        "scheme": scheme,
        "kind": kind,
        "username": params.pop("username", username),
        "password": params.pop("password", password),
        "sentinel_username": params.pop("sentinel_username", None),
        "sentinel_password": params.pop("sentinel_password", None),
        "tls": scheme.startswith("rediss"),
    }
    target.update(_whereabouts(kind, location, path if slash else None, params))
    return RedisTarget(**target)


def _credentials(userinfo: str, kind: RedisKind) -> tuple[str | None, str | None]:
    """User name and password from a URL's user information (``user:password``)."""
    if not userinfo:
        return None, None
    user, colon, secret = userinfo.partition(":")
    if not colon and kind != "unix":
        # "redis://secret@host" names a user, not a password: it would be sent as a user name
        # and fail to authenticate, or worse, be logged as one.
        raise _Bad("user information without ':' (write redis://:password@host)")
    return unquote(user) or None, unquote(secret) if colon else None


def _whereabouts(
    kind: RedisKind, location: str, path: str | None, params: dict[str, str]
) -> dict[str, Any]:
    """The RedisTarget fields saying where to connect, from the URL's location (hosts), its
    path (None: the URL has none) and what is left of its query parameters."""
    if kind == "unix":
        if location:
            raise _Bad("unix:// takes a socket path (unix:///run/redis.sock), no host")
        if not path:
            raise _Bad("names no socket path")
        return {"path": "/" + unquote(path), "db": _db(params.pop("db", "0"), _Bad)}
    where: dict[str, Any] = {"hosts": _hosts(location, kind, _Bad)}
    segments = [unquote(p) for p in path.split("/") if p] if path is not None else []
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise _Bad("expected /service_name or /service_name/db after the sentinels")
        where["service"] = segments[0]
        where["db"] = _db(params.pop("db", segments[1] if len(segments) == 2 else "0"), _Bad)
    elif kind == "cluster":
        if segments not in ([], ["0"]):
            raise _Bad("Redis Cluster has only database 0 (nothing, or /0, after the nodes)")
    else:
        if len(segments) > 1:
            raise _Bad("expected at most /db after host:port")
        where["db"] = _db(params.pop("db", segments[0] if segments else "0"), _Bad)
    where["tls_options"] = tuple(sorted(params.items()))
    return where


def _query_params(query: str, kind: RedisKind, bad: Any) -> dict[str, str]:
    """The query's parameters (percent-decoded), each known for ``kind`` and given once."""
    params: dict[str, str] = {}
    after_secret = False
    for part in query.split("&") if query else []:
        key, eq, value = part.partition("=")
        name = unquote(key)
        if not eq:
            raise bad(f"a query field without '='; {ENCODE_HINT}")
        if name not in PARAMS[kind]:
            if after_secret or not _PARAM_NAME.match(name):
                raise bad(f"unknown query parameter after a password; {ENCODE_HINT}")
            hint = (
                "; for Redis Cluster use redis+cluster://host:port[,host:port...]"
                if name == "cluster"
                else ""
            )
            known = ", ".join(sorted(PARAMS[kind]))
            raise bad(f"unknown query parameter {name!r} (accepted: {known}){hint}")
        if name in params:
            raise bad(f"query parameter {name!r} given twice")
        params[name] = unquote(value)
        after_secret = after_secret or name in SECRET_PARAMS
    if "ssl_cert_reqs" in params and params["ssl_cert_reqs"] not in _CERT_REQS:
        raise bad("ssl_cert_reqs must be one of " + ", ".join(_CERT_REQS))
    if "ssl_check_hostname" in params and params["ssl_check_hostname"] not in ("true", "false"):
        raise bad("ssl_check_hostname must be true or false")
    return params


def _hosts(location: str, kind: RedisKind, bad: type[_Bad]) -> tuple[tuple[str, int], ...]:
    default_port = 26379 if kind == "sentinel" else 6379
    items = location.split(",")
    if len(items) > 1 and kind == "standalone":
        raise bad("several hosts: use redis+sentinel:// or redis+cluster://")
    hosts: list[tuple[str, int]] = []
    for item in items:
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        host = unquote(host)
        if not host:
            raise bad("empty host")
        if port and not port.isdigit():
            raise bad("a port must be a number")
        number = int(port) if port else default_port
        if not 0 < number < 65536:
            raise bad("a port must be between 1 and 65535")
        hosts.append((host, number))
    return tuple(hosts)


def _db(text: str, bad: type[_Bad]) -> int:
    if not text.isdigit():
        raise bad("the database must be a number")
    return int(text)


def check_store_url(url: str | None) -> None:
    """Raise :class:`StoreConfigError` if ``url`` cannot name a store; connects to nothing."""
    if url is None:
        return
    scheme = scheme_of(url)
    if scheme == "sqlite":
        sqlite_path(url, Path("."))
    elif scheme in POSTGRES_SCHEMES:
        target = parse_postgres_url(url)
        if importlib.util.find_spec("psycopg") is None:
            raise StoreConfigError(_NO_DRIVER.format(url=target.redacted, missing="psycopg"))
    else:
        parse_redis_url(url)


def open_store(
    settings: StoreSettings, clock: Clock | None = None, *, create: bool = True
) -> Store:
    """Build the store ``settings`` names. Connects lazily; raises StoreConfigError on a bad URL.

    ``create=False`` is for commands that must not create state (``status``, ``history``, the
    steering commands): a SQLite database that does not exist raises
    :class:`~chronod.errors.StoreMissing` on first use instead of being created, and one written
    by an older chronod is read as it is, not migrated; a PostgreSQL schema that does not exist
    raises StoreMissing and is not created. (Reading a Redis store creates nothing.)
    """
    url = settings.url
    refuse_default_under_service(settings)
    if url is None or scheme_of(url) == "sqlite":
        if settings.replica_acks:
            raise StoreConfigError(
                "[chronod] replica_acks applies to Redis stores only (SQLite has no replicas)"
            )
        from chronod.store.sqlite import SQLiteStore

        return SQLiteStore(
            sqlite_path(url, settings.config_dir),
            history=settings.history,
            clock=clock,
            create=create,
        )
    if scheme_of(url) in POSTGRES_SCHEMES:
        return _open_postgres(settings, create)
    from chronod.store.redis import RedisStore

    return RedisStore.from_url(
        url,
        namespace=settings.namespace,
        history=settings.history,
        replica_acks=settings.replica_acks,
    )


def _open_postgres(settings: StoreSettings, create: bool) -> Store:
    """The PostgreSQL store (the driver is imported only here, when a URL asks for it)."""
    assert settings.url is not None
    target = parse_postgres_url(settings.url, settings.namespace)
    if settings.replica_acks:
        raise StoreConfigError(
            "[chronod] replica_acks applies to Redis stores only (PostgreSQL waits for the "
            "standbys its synchronous_standby_names names)"
        )
    try:
        from chronod.store.postgres.store import PostgresStore
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise StoreConfigError(_NO_DRIVER.format(url=target.redacted, missing=missing)) from None
    return PostgresStore(target, history=settings.history, create=create)
