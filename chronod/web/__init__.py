"""The web page (``chronod web``): see :mod:`chronod.web.server` for the pages and the JSON API."""

from __future__ import annotations

from chronod.web.server import DEFAULT_BIND, WebHandle, serve, start_web

__all__ = ["DEFAULT_BIND", "WebHandle", "serve", "start_web"]
