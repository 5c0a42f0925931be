"""Progress of a build as structured events.

The pipeline emits events; the CLI renders them and tests assert on them. An
emitter is any callable taking an Event, so a library user can collect them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # stage-start, stage-end, stage-failed, info, warning, progress, output
    stage: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An emitter for callers that do not want progress."""


@dataclass
class StageTimes:
    """Wall time per stage, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    def total(self) -> float:
        return sum(self.seconds.values())


@contextmanager
def stage(emit: Emit, name: str, times: StageTimes | None = None) -> Iterator[None]:
    """Bracket one pipeline stage with start/end events and record its duration."""
    emit(Event("stage-start", name))
    started = time.monotonic()
    try:
        yield
    except BaseException as error:
        elapsed = time.monotonic() - started
        emit(Event("stage-failed", name, str(error) or type(error).__name__, {"seconds": elapsed}))
        raise
    elapsed = time.monotonic() - started
    if times is not None:
        times.seconds[name] = times.seconds.get(name, 0.0) + elapsed
    emit(Event("stage-end", name, data={"seconds": elapsed}))
