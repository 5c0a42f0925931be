"""The build log: every event of a build as a line, kept with the module logs.

Each build gets a folder `<cache>/logs/<build id>/` holding `build.log` and
ansible-runner's artifacts of each Ansible run (`ansible-NN-NAME/`, with its
job_events/ and stdout); the newest builds' folders are kept, and this is the
only pruning of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from hotsauce.events import Emit, Event
from hotsauce.store.cache import Cache

LOGS = "logs"
KEEP_NEWEST = 20


@contextmanager
def build_log(cache: Cache, build_id: str, emit: Emit) -> Iterator[tuple[Path, Emit]]:
    """The build's log folder, and an emitter that writes every event there before passing it on."""
    folder = cache.folder(LOGS) / build_id
    folder.mkdir(mode=0o700)  # module output may carry what a build.yaml holds
    cache.prune(LOGS, KEEP_NEWEST)
    started = time.monotonic()
    log_path = folder / "build.log"
    log_path.touch(mode=0o600)
    with log_path.open("w") as log:

        def logged(event: Event) -> None:
            if event.kind != "progress":
                _write(log, started, event)
            emit(event)

        yield folder, logged


def _write(log: TextIO, started: float, event: Event) -> None:
    data = json.dumps(event.data, default=str, sort_keys=True) if event.data else ""
    message = event.message.rstrip("\n")
    log.write(f"{time.monotonic() - started:8.2f} {event.stage} {event.kind}: {message} {data}".rstrip() + "\n")
    log.flush()

