"""Progress of a build as structured events.

The pipeline emits events; the CLI renders them and tests assert on them. An
emitter is any callable taking an Event, so a library user can collect them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What an event reports. The values are the strings events always carried."""

    STAGE_START = "stage-start"
    STAGE_END = "stage-end"
    STAGE_FAILED = "stage-failed"  # message: why; data: seconds
    INFO = "info"
    WARNING = "warning"
    PROGRESS = "progress"  # data: done, total (bytes)
    OUTPUT = "output"  # a line a module's tool printed, streamed as it runs
    FINISHED = "finished"  # the last event of a successful build; data: seconds per stage


class Stage(StrEnum):
    """The stages of a build, in the order they run, and those of `hotsauce boot` and `upload`."""

    CONFIG = "config"  # build.yaml checked, modules resolved, -o's place claimed
    DOWNLOAD = "download"  # a `download:` base fetched and checked
    DISK = "disk"  # the image file allocated, partitioned and attached
    FORMAT = "format"  # the root filesystem made
    MOUNT = "mount"  # the root filesystem mounted
    BASE = "base"  # the root filled from the base (or from cached module runs)
    MODULES = "modules"
    SBOM = "sbom"  # the image's software bill of materials read from the mounted root
    FINISH = "finish"  # the root scrubbed, boot files copied, unmounted and detached
    CONVERT = "convert"  # the root image, manifest, libvirt.xml and checksums written
    BOOT_CHECK = "boot-check"
    PUBLISH = "publish"  # -o written
    BOOT = "boot"
    VERIFY = "verify"
    UPLOAD = "upload"


@dataclass(frozen=True, init=False)
class Event:
    kind: EventKind
    stage: str  # a Stage, or the part of a stage that speaks (ansible, galaxy)
    message: str
    data: dict[str, Any]

    def __init__(self, kind: EventKind | str, stage: str, message: str = "",
                 data: dict[str, Any] | None = None) -> None:
        # A kind given as its string is checked here, where a misspelt one is made.
        object.__setattr__(self, "kind", EventKind(kind))
        object.__setattr__(self, "stage", stage)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "data", {} if data is None else data)


Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An emitter for callers that do not want progress."""


@dataclass
class StageTimes:
    """Wall time per stage, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, elapsed: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed


@contextmanager
def stage(emit: Emit, name: str, times: StageTimes | None = None) -> Iterator[None]:
    """Bracket one pipeline stage with start/end events and record its duration."""
    emit(Event(EventKind.STAGE_START, name))
    started = time.monotonic()
    try:
        yield
    except BaseException as error:
        elapsed = time.monotonic() - started
        emit(Event(EventKind.STAGE_FAILED, name, str(error) or type(error).__name__, {"seconds": elapsed}))
        raise
    elapsed = time.monotonic() - started
    if times is not None:
        times.add(name, elapsed)
    emit(Event(EventKind.STAGE_END, name, data={"seconds": elapsed}))
