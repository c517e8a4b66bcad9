"""chronod._proc.Waker: the self-pipe the daemon, the worker pool and the web server sleep on."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from chronod._proc import Waker


@pytest.fixture
def waker() -> Iterator[Waker]:
    made = Waker()
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        yield made
    finally:
        made.close()
        signal.signal(signal.SIGUSR1, previous)


def signal_from_another_thread(sig: int) -> None:
    """Deliver ``sig`` to a thread other than the main one, as the kernel may do with a signal
    sent to the process (here deterministic: the thread signals itself)."""
    other = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), sig))
    other.start()
    other.join()


def test_a_signal_delivered_to_another_thread_wakes_the_main_thread(waker: Waker) -> None:
    caught: list[int] = []

    def handler(sig: int, _frame: FrameType | None) -> None:
        caught.append(sig)

    signal.signal(signal.SIGUSR1, handler)
    waker.wake_on_signals()
    threading.Timer(0.2, signal_from_another_thread, (signal.SIGUSR1,)).start()
    started = time.monotonic()
    assert waker.wait(10.0)
    # Without the wakeup fd the main thread's select() sleeps its full 10 s: the handler only
    # runs once the main thread executes bytecode again.
    assert time.monotonic() - started < 5.0
    waker.wait(0.0)  # the handler runs at the main thread's next bytecode at the latest
    assert caught == [signal.SIGUSR1]


def test_close_gives_the_wakeup_fd_back(waker: Waker) -> None:
    waker.wake_on_signals()
    waker.close()
    assert signal.set_wakeup_fd(-1) == -1
