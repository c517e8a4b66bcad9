"""Dead-man's-switch pings, the healthchecks.io protocol (also Cronitor's and self-hosted
healthchecks'): ``<url>/start`` when a run starts, ``<url>`` on success, ``<url>/fail`` on
failure, with ``?rid=<uuid>`` tying the start to its end and the output tail as the body.

A watcher that hears nothing for the job's period plus its grace raises the alarm itself: that is
what notices a chronod that is down altogether.
"""

from __future__ import annotations

import uuid

from chronod.alerts.channels import post
from chronod.alerts.events import GOOD, Notice
from chronod.alerts.model import PING_KINDS

__all__ = ["PING_KINDS", "ping_url", "run_uuid", "send_ping", "signal_of"]

PING_BODY = 10_000  # healthchecks.io keeps the first 100 kB of a ping body; the tail is enough


def run_uuid(run_id: str) -> str:
    """``rid``: healthchecks wants a UUID; the same run id always gives the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chronod:{run_id}"))


def ping_url(base: str, signal: str, run_id: str) -> str:
    """``signal`` is ``start``, ``success`` or ``fail``."""
    path = base.rstrip("/") + ("" if signal == "success" else f"/{signal}")
    return f"{path}{'&' if '?' in base else '?'}rid={run_uuid(run_id)}"


def signal_of(kind: str) -> str:
    if kind == "started":
        return "start"
    return "success" if kind in GOOD else "fail"


def send_ping(base: str, notice: Notice) -> None:
    """Report the start or end of the notice's run (DeliveryError on failure)."""
    run = notice.event.run
    url = ping_url(base, signal_of(notice.event.kind), run.run_id)
    data = run.output.encode("utf-8", errors="replace")[-PING_BODY:]  # empty for a start
    post(url, data, {"Content-Type": "text/plain; charset=utf-8", "X-Chronod-Event": notice.key})
