"""The URLs notifications go to: checked when the config is read, shown only redacted.

A Slack webhook's path *is* its credential, an SMTP URL carries a password and a
healthchecks.io ping URL's UUID is all it takes to report a check's state; so a URL is shown as
its scheme and host, never more (STYLE.md: no settings ``repr`` that prints a password).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

MAX_URL = 2048


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: what may be logged or shown of ``url``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unreadable URL>"
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}" if parts.scheme else "<not a URL>"


def _split(url: object, schemes: tuple[str, ...], what: str) -> SplitResult:
    if not isinstance(url, str):
        raise TypeError(f"expected {what} as a string")
    if len(url) > MAX_URL or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError(f"expected {what} without spaces, at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"expected {what}; the port or host cannot be read") from None
    if parts.scheme not in schemes:
        shown = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"expected {what} starting with {shown}")
    if not parts.hostname:
        raise ValueError(f"expected {what} with a host")
    return parts


def http_url(url: object) -> str:
    """An ``http://`` or ``https://`` URL with a host; ValueError/TypeError naming what is wrong
    (never quoting the URL)."""
    _split(url, ("http", "https"), "an http(s) URL")
    assert isinstance(url, str)
    return url


def smtp_url(url: object) -> str:
    """``smtp://[user:pass@]host[:port]`` (STARTTLS when the server offers it; port 587 by
    default) or ``smtps://`` (TLS from the start; port 465)."""
    _split(url, ("smtp", "smtps"), "an smtp:// or smtps:// URL")
    assert isinstance(url, str)
    return url
