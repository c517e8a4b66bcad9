"""Sending one notice over one channel: a webhook POST, a mail, a command's stdin.

Every transport is bounded in time (:data:`TIMEOUT`) and raises :class:`DeliveryError` with a
reason that never holds a secret (a webhook URL is shown redacted, an SMTP password never). The
idempotency key travels with every attempt: ``Idempotency-Key`` and ``X-Chronod-Event`` headers,
the mail's ``Message-ID``, the command's ``CHRONOD_EVENT_ID`` and the body's ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import smtplib
import ssl
import subprocess
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit

from chronod.alerts.events import Notice, body, mail, slack
from chronod.alerts.model import Channel
from chronod.alerts.urls import redact_url
from chronod.errors import ChronodError

TIMEOUT = 10.0  # seconds for one delivery attempt of one notice to one channel
USER_AGENT = "chronod-notify/1"
SIGNATURE_HEADER = "X-Chronod-Signature"


class DeliveryError(ChronodError):
    """One delivery attempt failed; ``str()`` is one line without secrets."""


def signature(secret: str, data: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the channel's ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def post(url: str, data: bytes, headers: dict[str, str], timeout: float = TIMEOUT) -> int:
    """POST ``data``; the status of a 2xx answer, else DeliveryError (URL shown redacted)."""
    request = urllib.request.Request(url, data=data, method="POST")
    for name, value in {"User-Agent": USER_AGENT, **headers}.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(64 * 1024)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{redact_url(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{redact_url(url)} unreachable: {reason}") from None


def send(channel: Channel, notice: Notice, *, smtp: str | None, sender: str | None) -> None:
    """Deliver ``notice`` over ``channel`` once (DeliveryError on failure)."""
    if channel.kind == "webhook":
        _webhook(channel, notice)
    elif channel.kind == "email":
        if smtp is None or sender is None:
            raise DeliveryError("email needs [chronod] smtp and from")
        _email(smtp, mail(notice, sender, channel.recipients))
    else:
        _command(channel, notice)


def _webhook(channel: Channel, notice: Notice) -> None:
    data = slack(notice) if channel.format == "slack" else body(notice)
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": notice.key,
        "X-Chronod-Event": notice.key,
    }
    if channel.secret:
        headers[SIGNATURE_HEADER] = signature(channel.secret, data)
    post(channel.url or "", data, headers)


def _email(url: str, message: object) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = redact_url(url)
    try:
        if parts.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, parts.port or 465, timeout=TIMEOUT, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(host, parts.port or 587, timeout=TIMEOUT)
        with client:
            client.ehlo_or_helo_if_needed()
            secure = parts.scheme == "smtps"
            if not secure and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                secure = True
            if parts.username and not secure:
                raise DeliveryError(f"{where} offers no STARTTLS: the password is not sent")
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)  # type: ignore[arg-type]
    except smtplib.SMTPAuthenticationError:
        raise DeliveryError(f"{where} refused the login") from None
    except (smtplib.SMTPException, OSError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise DeliveryError(f"{where}: {text[:200]}") from None


def _command(channel: Channel, notice: Notice) -> None:
    env = {**os.environ, "CHRONOD_EVENT_ID": notice.key, "CHRONOD_EVENT": notice.event.kind}
    try:
        done = subprocess.run(
            channel.argv,
            input=body(notice),
            capture_output=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"{channel.argv[0]} did not finish in {TIMEOUT:g}s") from None
    except OSError as exc:
        raise DeliveryError(f"{channel.argv[0]} could not start: {exc.strerror}") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise DeliveryError(f"{channel.argv[0]} exited {done.returncode}: {tail[0][:200]}")
