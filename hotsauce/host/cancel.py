"""Cancelling a build from another thread, as ansible-runner's `cancel_callback` does.

A library caller hands `build()` a callable that says whether to stop. The
build asks it at each stage boundary and inside its long waits (a child
process, an ansible-runner run, a copy with progress); when it says yes,
`Cancelled` is raised in the build's own thread, so everything held is
released on the way out exactly as on an error. Signals cannot do this:
their handlers only run in the main thread.

A release must never be cut short by a cancel, or it would leave what it
was releasing: nothing is raised while an exception is already unwinding
the build, after Cancelled was raised once, or inside `shielded()`.

The callable lives in a context variable: each build (and only the thread
running it) sees its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from hotsauce.errors import Cancelled

CancelRequested = Callable[[], bool]

# How often a wait looks at the cancel callable.
POLL_SECONDS = 0.2


@dataclass
class _Request:
    requested: CancelRequested
    raised: bool = False
    shields: int = 0


_current: ContextVar[_Request | None] = ContextVar("hotsauce_cancel", default=None)


@contextmanager
def cancellable(requested: CancelRequested | None) -> Iterator[None]:
    """Within this block, `check()` raises Cancelled once `requested()` is true."""
    token = _current.set(_Request(requested) if requested is not None else None)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def shielded() -> Iterator[None]:
    """A release that runs on the way to success: `check()` raises nothing until it is done."""
    request = _current.get()
    if request is None:
        yield
        return
    request.shields += 1
    try:
        yield
    finally:
        request.shields -= 1


def requested() -> bool:
    """Whether the build running in this thread was asked to stop."""
    request = _current.get()
    return request is not None and request.requested()


def check() -> None:
    """Raise Cancelled if the build running in this thread was asked to stop and nothing
    is being released."""
    request = _current.get()
    if request is None or request.raised or request.shields or sys.exc_info()[1] is not None:
        return
    if request.requested():
        request.raised = True
        raise Cancelled()
