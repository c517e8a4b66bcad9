"""``sd_notify`` through a real ``AF_UNIX`` datagram socket, as systemd receives the messages.

The daemon and the worker supervisor are tested end to end in ``test_process_ops.py``; here the
protocol details: message shapes, the abstract namespace, ``WATCHDOG_PID``, de-duplicated STATUS.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chronod.notify import Notifier


class Listener:
    """A bound datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def next(self) -> list[str]:
        return self.sock.recv(65536).decode().split("\n")

    def pending(self) -> list[list[str]]:
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(65536).decode().split("\n"))
        except BlockingIOError:
            return messages
        finally:
            self.sock.settimeout(5)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    path = str(tmp_path / "notify.sock")
    listening = Listener(path)
    yield listening, path
    listening.sock.close()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def test_messages(listener: tuple[Listener, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    notifier.ready("leader, epoch 3; 2 jobs")
    assert sock.next() == ["READY=1", "STATUS=leader, epoch 3; 2 jobs", f"MAINPID={os.getpid()}"]
    notifier.watchdog()
    assert sock.next() == ["WATCHDOG=1"]
    notifier.reloading()
    reloading, usec = sock.next()
    assert reloading == "RELOADING=1"
    assert usec.startswith("MONOTONIC_USEC=")
    assert abs(int(usec.split("=")[1]) / 1e6 - _monotonic()) < 5
    notifier.stopping()
    assert sock.next() == ["STOPPING=1", "STATUS=stopping"]


def _monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def test_status_is_sent_only_when_it_changes(listener: tuple[Listener, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    notifier.ready("a")
    notifier.status("a")
    notifier.status("b\nsecond line")
    notifier.status("b\nsecond line")
    assert sock.pending() == [
        ["READY=1", "STATUS=a", f"MAINPID={os.getpid()}"],
        ["STATUS=b second line"],  # one line: systemd's STATUS is a single line
    ]


def test_the_environment_names_the_socket_and_the_watchdog(
    listener: tuple[Listener, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.watchdog_interval() == 1.5  # half of WatchdogSec
    notifier.watchdog()
    assert sock.next() == ["WATCHDOG=1"]


def test_a_watchdog_meant_for_another_process_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert Notifier().watchdog_interval() is None


def test_abstract_namespace_socket() -> None:
    name = f"chronod-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier("@" + name).watchdog()
        assert sock.recv(1024) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_a_reader_that_is_behind_never_blocks_the_sender(
    listener: tuple[Listener, str],
) -> None:
    _, path = listener  # bound, never read: its queue fills after a few datagrams
    notifier = Notifier(path)
    began = time.monotonic()
    for _ in range(1000):
        notifier.watchdog()
    assert time.monotonic() - began < 5


def test_without_a_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    quiet = Notifier()
    assert not quiet.enabled
    quiet.ready("x")
    quiet.watchdog()
    assert quiet.watchdog_interval() is None
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))  # systemd went away: not our problem
    gone.ready("x")
    gone.stopping()
