"""Notification config (chronod.alerts.settings): channels, job keys, every mistake located,
secrets never quoted back."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from chronod.alerts import DEFAULT_NOTIFY_ON
from chronod.alerts.urls import redact_url
from chronod.config import DaemonConfig, load_config
from chronod.runtime import daemon_changes
from tests.test_config import errors, write

SECRET_URL = "https://hooks.slack.com/services/T000/B000/TOKENTOKEN"
HEADER = """
[chronod]
smtp = "smtp://user:hunter2@mail.example:587"
from = "chronod@example.org"

[notify.ops]
webhook = "https://hooks.example/chronod"
secret = "0123456789abcdef-secret"

[notify.chat]
webhook = "https://hooks.slack.com/services/T000/B000/TOKENTOKEN"
format = "slack"

[notify.oncall]
email = ["oncall@example.org", "db@example.org"]

[notify.pager]
command = ["/usr/local/bin/page", "--team", "db"]

[defaults]
timezone = "UTC"
"""


def test_channels_and_job_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        notify = ["ops"]
        notify_every = "30m"

        [jobs.backup]
        every = "1h"
        command = "true"
        notify = ["ops", "oncall"]
        notify_on = ["failed", "recovered"]
        ping = "https://hc-ping.com/5f1c"

        [jobs.plain]
        every = "1h"
        command = "true"

        [jobs.quiet]
        every = "1h"
        command = "true"
        notify = []
        """,
        HEADER,
    )
    config = load_config(path)
    assert set(config.channels) == {"ops", "chat", "oncall", "pager"}
    ops, chat = config.channels["ops"], config.channels["chat"]
    assert (ops.kind, ops.format, ops.secret) == ("webhook", "json", "0123456789abcdef-secret")
    assert (chat.format, chat.url) == ("slack", SECRET_URL)
    assert config.channels["oncall"].recipients == ("oncall@example.org", "db@example.org")
    assert config.channels["pager"].argv == ("/usr/local/bin/page", "--team", "db")
    assert config.daemon.smtp == "smtp://user:hunter2@mail.example:587"
    assert config.daemon.mail_from == "chronod@example.org"
    backup = config.jobs["backup"].alerts
    assert backup.notify == ("ops", "oncall")
    assert backup.notify_on == {"failed", "recovered"}
    assert backup.notify_every == timedelta(minutes=30)  # from [defaults]
    assert backup.ping == "https://hc-ping.com/5f1c"
    plain = config.jobs["plain"].alerts
    assert (plain.notify, plain.notify_on, plain.ping) == (("ops",), DEFAULT_NOTIFY_ON, None)
    assert not config.jobs["quiet"].alerts.wanted
    # Default: failures and the news that the job works again, not every success.
    assert {"failed", "timed-out", "lost", "recovered"} <= DEFAULT_NOTIFY_ON
    assert "succeeded" not in DEFAULT_NOTIFY_ON


def test_secrets_never_shown(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[jobs.a]\nevery = "1h"\ncommand = "true"\n', HEADER))
    shown = repr(config) + repr(dict(config.channels)) + repr(config.daemon)
    for secret in ("TOKENTOKEN", "hunter2", "0123456789abcdef-secret", "/services/"):
        assert secret not in shown
    assert config.channels["chat"].describe() == "webhook https://hooks.slack.com/… (slack)"
    assert config.channels["ops"].describe() == "webhook https://hooks.example/… (json, signed)"
    assert redact_url("smtp://user:hunter2@mail.example:587") == "smtp://mail.example:587"


def test_check_locates_every_mistake(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [notify.bad]
        webhook = "ftp://hooks.example/TOKENTOKEN"
        format = "xml"
        secret = "short"

        [notify.both]
        webhook = "https://a.example/"
        command = ["/bin/true"]

        [notify.mailfmt]
        email = "not-an-address"
        format = "json"

        [jobs.a]
        every = "1h"
        command = "true"
        notify = ["opz", "pager"]
        notify_on = ["failed", "faild", "explode"]
        notify_every = "soon"
        ping = "hc-ping.com/5f1c"
        """,
        HEADER,
    )
    found_every = found[9]
    found[9] = "NOTIFY_EVERY"
    assert found == [
        "FILE: notify.bad.webhook: expected an http(s) URL starting with http:// or https://",
        "FILE: notify.bad.format: expected 'json' or 'slack' (got \"xml\")",
        "FILE: notify.bad.secret: expected a string of 16 to 1024 characters",
        "FILE: notify.both: needs exactly one of 'webhook', 'email' or 'command' "
        "(found webhook and command)",
        "FILE: notify.mailfmt.format: only applies to webhook channels, this one uses 'email'",
        "FILE: notify.mailfmt.email: expected an address or an array of 1 to 50 addresses "
        '(got "not-an-address")',
        "FILE: jobs.a.notify: unknown channel \"opz\"; did you mean 'ops'?",
        "FILE: jobs.a.notify_on: unknown outcome \"faild\"; did you mean 'failed'?",
        'FILE: jobs.a.notify_on: unknown outcome "explode"; expected some of failed, '
        "timed-out, lost, missed, config-mismatch, uncertain, quarantined, recovered, succeeded",
        "NOTIFY_EVERY",
        "FILE: jobs.a.ping: expected an http(s) URL starting with http:// or https://",
    ]
    assert found_every.startswith("FILE: jobs.a.notify_every: ")
    assert found_every.endswith('"soon")')
    assert not any("TOKENTOKEN" in line or "short" in line for line in found)


def test_email_needs_smtp_and_defaults_are_checked(tmp_path: Path) -> None:
    header = """
    [chronod]
    smtp = "http://user:hunter2@mail.example"
    from = "nobody"

    [notify.oncall]
    email = "oncall@example.org"

    [defaults]
    timezone = "UTC"
    notify = ["nope"]
    """
    found = errors(
        tmp_path, '[jobs.a]\nevery = "1h"\ncommand = "true"\nnotify = []\n', textwrap.dedent(header)
    )
    assert found == [
        "FILE: chronod.smtp: expected an smtp:// or smtps:// URL starting with smtp:// or smtps://",
        "FILE: chronod.from: expected an address like 'chronod@example.org' (got \"nobody\")",
        'FILE: notify.oncall.email: needs [chronod] smtp = "smtp://…" and from = "…" to send mail',
        'FILE: defaults.notify: unknown channel "nope"; channels: none; declare one as '
        "[notify.NAME]",
    ]
    assert not any("hunter2" in line for line in found)


def test_smtp_and_from_apply_at_reload_without_a_restart_note() -> None:
    old = DaemonConfig(smtp="smtp://a.example", mail_from="a@example.org")
    new = replace(old, smtp="smtp://b.example", mail_from="b@example.org", history=7)
    assert daemon_changes(old, new) == ["history"]


def test_values_of_the_wrong_shape_are_located_not_raised(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [jobs.a]
        every = "1h"
        command = "true"
        notify = [{ k = 1 }]
        notify_on = [{ k = { k = "90s" } }, ["failed"]]
        notify_every = 5
        ping = ["https://hc-ping.com/x"]
        """,
        HEADER,
    )
    assert [line.split(": ")[1] for line in found] == [
        "jobs.a.notify",
        "jobs.a.notify_on",
        "jobs.a.notify_every",
        "jobs.a.ping",
    ]
