"""chronod: a cron replacement for more than one host."""

from __future__ import annotations

__version__ = "0.1.0"
