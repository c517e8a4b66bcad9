"""PostgreSQL store URLs: ``postgresql://user:pass@host:5432/db?sslmode=verify-full``.

The URL goes to libpq as it is (so every parameter libpq knows works: TLS, ``connect_timeout``,
several hosts, ``target_session_attrs``); chronod only checks its outline here, without importing
the driver, and redacts it for every message. The schema chronod keeps its tables in is the
``[chronod] namespace`` (default ``chronod``), never a URL parameter: one config key says where
the state is on every store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from chronod.errors import StoreConfigError

POSTGRES_SCHEMES = ("postgresql", "postgres")
# A schema name chronod creates and quotes: lower case, so that psql users need no quotes either.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


@dataclass(frozen=True, kw_only=True)
class PostgresTarget:
    """A checked PostgreSQL store URL and the schema chronod uses in its database."""

    url: str = field(repr=False)  # as given, credentials included: only for libpq
    schema: str
    redacted: str

    def secrets(self) -> tuple[str, ...]:
        """The password as the URL writes it and decoded (libpq's errors may quote either)."""
        found: list[str] = []
        rest = self.url.partition("://")[2]
        head, _, query = rest.partition("?")
        userinfo = head.rpartition("@")[0] if "@" in head else ""
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        for part in query.split("&") if query else []:
            name, eq, value = part.partition("=")
            if eq and unquote(name) in _SECRET_PARAMS:
                found.append(value)
        found += [unquote(secret) for secret in found]
        return tuple(sorted({secret for secret in found if secret}, key=len, reverse=True))

    def scrubbed(self, text: str) -> str:
        """``text`` (a driver's message) with every form of the password as ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


def redact_postgres_url(url: str) -> str:
    """``url`` with its password (in the user information or a query parameter) as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.partition(":")[0] + ":***" if "@" in url or "?" in url else url
    head, qmark, query = rest.partition("?")
    if "@" in head:
        userinfo, _, hosts = head.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        head = f"{user}:***@{hosts}" if colon else f"{user}@{hosts}"
    if qmark:
        parts = []
        for part in query.split("&"):
            name, eq, _ = part.partition("=")
            parts.append(f"{name}=***" if eq and unquote(name) in _SECRET_PARAMS else part)
        query = "&".join(parts)
    return f"{scheme}://{head}{qmark}{query}"


def parse_postgres_url(url: str, namespace: str = "chronod") -> PostgresTarget:
    """Check ``url`` and ``namespace``; raise :class:`StoreConfigError` (one line, redacted)."""
    shown = redact_postgres_url(url)
    scheme = url.partition(":")[0].lower()
    if scheme not in POSTGRES_SCHEMES or not url[len(scheme) :].startswith("://"):
        raise StoreConfigError(f"store URL {shown!r}: expected postgresql://[user[:password]@]host")
    try:
        parts = urlsplit(url)
        for host_port in parts.netloc.rpartition("@")[2].split(","):
            port = host_port.rpartition("]")[2].partition(":")[2] if host_port else ""
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError("a port must be a number between 1 and 65535")
        parse_qsl(parts.query, strict_parsing=bool(parts.query))
    except ValueError as exc:
        message = "malformed query" if "query" in str(exc).lower() else str(exc)
        raise StoreConfigError(f"store URL {shown!r}: {message}") from None
    if parts.fragment:
        raise StoreConfigError(f"store URL {shown!r}: a '#' ends a URL; percent-encode it (%23)")
    if not _SCHEMA_NAME.match(namespace):
        raise StoreConfigError(
            f"[chronod] namespace {namespace!r} names the PostgreSQL schema of a postgresql:// "
            "store: use lower-case letters, digits and '_' (at most 63, not starting with a digit)"
        )
    return PostgresTarget(url=url, schema=namespace, redacted=shown)
