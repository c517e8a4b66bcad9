"""What a notification says: an outbox event as JSON, as a Slack message, as a mail.

Pure functions of the event (and the folded count of flood control): the transports in
:mod:`chronod.alerts.channels` send what these build.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from chronod.instants import format_utc
from chronod.store.base import OutboxEvent, Outcome, RunRecord

# The event kinds that mean "the job did its work" (a ping's success; the mood of a message).
GOOD = frozenset(("succeeded", "recovered"))
SHOWN_TAIL = 3000  # characters of output in a Slack message or a mail body


@dataclass(frozen=True, kw_only=True)
class Notice:
    """One event as sent: what happened, and how many earlier ones flood control folded in."""

    event: OutboxEvent
    folded: int = 0  # events of this job and channel not sent since the last one that was
    test: bool = False  # `chronod notify test`

    @property
    def key(self) -> str:
        """The idempotency key: stable across every delivery attempt of the event."""
        return self.event.event_id


def payload(notice: Notice) -> dict[str, Any]:
    """The JSON body of a ``json`` webhook and of a command's stdin."""
    run = notice.event.run
    return {
        "id": notice.key,
        "kind": notice.event.kind,
        "test": notice.test,
        "job": run.job,
        "run_id": run.run_id,
        "slot": format_utc(run.slot),
        "manual": run.manual,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "outcome": run.state.value,
        "exit_code": run.exit_code,
        "duration_seconds": _duration(run),
        "host": run.worker,
        "error": run.error,
        "finished_at": None if run.finished_at is None else format_utc(run.finished_at),
        "folded": notice.folded,
        "output_tail": run.output,
    }


def body(notice: Notice) -> bytes:
    return json.dumps(payload(notice), separators=(",", ":")).encode()


def headline(notice: Notice) -> str:
    """One readable line: ``[chronod] backup failed (exit 3) on db1:412, attempt 2/2, 4.2s``."""
    run = notice.event.run
    kind = notice.event.kind
    what = "recovered: succeeded again" if kind == "recovered" else kind
    parts = [f"{run.job} {what}"]
    if run.exit_code is not None and kind not in GOOD:
        parts[0] += f" (exit {run.exit_code})"
    if run.worker:
        parts[0] += f" on {run.worker}"
    parts.append(f"run {run.run_id}, attempt {run.attempt}/{run.max_attempts}")
    duration = _duration(run)
    if duration is not None:
        parts.append(f"{duration:.1f}s")
    if notice.folded:
        parts.append(f"{notice.folded} earlier event(s) folded in")
    if run.error and kind not in GOOD:
        parts.append(run.error)
    prefix = "[chronod test] " if notice.test else "[chronod] "
    return prefix + ", ".join(parts)


def slack(notice: Notice) -> bytes:
    """A Slack incoming-webhook body: the headline, then the output tail as a code block."""
    text = headline(notice)
    tail = notice.event.run.output[-SHOWN_TAIL:].replace("```", "'''")
    if tail.strip():
        text += f"\n```{tail}```"
    return json.dumps({"text": text}).encode()


def mail(notice: Notice, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = headline(notice)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    # The same id for every attempt (mail systems drop repeats), in characters a Message-ID takes.
    message["Message-ID"] = f"<{hashlib.sha256(notice.key.encode()).hexdigest()[:32]}@chronod>"
    message["X-Chronod-Event"] = notice.key
    tail = notice.event.run.output[-SHOWN_TAIL:]
    message.set_content(headline(notice) + "\n\n" + (tail or "(no output)") + "\n")
    return message


def _duration(run: RunRecord) -> float | None:
    if run.started_at is None or run.finished_at is None:
        return None
    return round((run.finished_at - run.started_at).total_seconds(), 3)


def sample_event(job: str, now: datetime, host: str) -> OutboxEvent:
    """The event `chronod notify test` sends: a made-up failure of ``job``, marked as a test."""
    run_id = f"{job}@{format_utc(now)}~test"
    run = RunRecord(
        run_id=run_id,
        job=job,
        slot=now,
        manual=True,
        state=Outcome.FAILED,
        queue="default",
        digest="",
        epoch=0,
        attempt=1,
        max_attempts=1,
        created_at=now,
        started_at=now,
        finished_at=now,
        worker=host,
        exit_code=1,
        output="this is a test notification from 'chronod notify test'\n",
        error="test",
    )
    return OutboxEvent(event_id=f"{run_id}#1:failed", kind="failed", run=run, created_at=now)
