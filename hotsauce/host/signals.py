"""SIGTERM unwinds a build the same way Ctrl-C does.

Python turns SIGINT into KeyboardInterrupt, which runs every context
manager's release on the way out; SIGTERM by default kills the process with
nothing released. While a build runs, SIGTERM raises Interrupted instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hotsauce.errors import Interrupted


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    # A second signal must not interrupt the release of what the build holds.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; everything held was released")


@contextmanager
def interruptible() -> Iterator[None]:
    """Within this block, SIGTERM and SIGINT raise Interrupted in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
